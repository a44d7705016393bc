"""A fake OpenAI-compatible engine: a real ASGI server with scripted behaviour and records.

    engine = FakeEngine("w1", behaviour=Behaviour(ttft_s=0.01, itl_s=0.005, tokens=20))
    engine.fail_next(503)            # next request: 503 before any byte
    engine.drop_next(after_chunks=3) # next request: connection dropped after 3 body chunks
    engine.behaviour.healthy = False # /health answers 503
    engine.behaviour.cached_tokens = 32  # usage.prompt_tokens_details.cached_tokens
    FakeEngine("w1", kv=FakeKVEvents())  # GET /v1/kv/events (see tests.fakes.kv_events)

Serve it on 127.0.0.1 (``tests.fakes.server.serve_app``, or ``python -m tests.fakes.engine``)
or call it in memory through ``ASGITransport``. Each inference request leaves a
:class:`RequestRecord`: the exact body and headers received, the exact bytes sent, and
how it ended — ``cancelled`` means the client's disconnect reached the engine and
stopped generation. ``Behaviour.instant()`` (no delays) and ``record=False`` are for
benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import orjson
from tests.fakes import openai_payloads as payloads
from tests.fakes.kv_events import FakeKVEvents

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Outcome = Literal["running", "completed", "cancelled", "dropped", "failed"]

Headers = tuple[tuple[bytes, bytes], ...]

_KINDS = MappingProxyType(
    {"/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/embeddings": "embedding"}
)
_JSON: Headers = ((b"content-type", b"application/json"),)
_SSE: Headers = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))


@dataclass
class Behaviour:
    """How every request is answered (mutable: tests change it between requests)."""

    ttft_s: float = 0.0
    itl_s: float = 0.0
    tokens: int = 8  # when the request gives no max_tokens
    healthy: bool = True
    embedding_dims: int = 8
    cached_tokens: int | None = None  # reported in usage when set (or learned: FakeKVEvents)

    @classmethod
    def instant(cls) -> Behaviour:
        return cls()


@dataclass(frozen=True)
class Failure:
    """A scripted failure for one request: a status before any byte, or a dropped connection."""

    status: int | None = None
    drop_after_chunks: int | None = None


@dataclass(eq=False)
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    started_s: float
    client: tuple[str, int] | None = None  # the peer address: shows connection reuse
    sent: bytearray = field(default_factory=bytearray)
    status: int | None = None
    outcome: Outcome = "running"
    ended_s: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    async def wait(self, timeout_s: float = 5.0) -> Outcome:
        await asyncio.wait_for(self.done.wait(), timeout_s)
        return self.outcome


class DroppedConnection(Exception):
    """Raised inside the app to make the server drop the connection (a scripted crash)."""


class FakeEngine:
    """The ASGI app. Models named in a request are served whatever they are called."""

    def __init__(
        self,
        name: str = "fake",
        *,
        behaviour: Behaviour | None = None,
        models: tuple[str, ...] = ("fake-model",),
        record: bool = True,
        clock: Callable[[], float] = time.monotonic,
        kv: FakeKVEvents | None = None,
    ) -> None:
        self.name = name
        self.kv = kv
        self.behaviour = behaviour or Behaviour()
        self.models = models
        self.record = record
        self.records: list[RequestRecord] = []
        self.health_checks = 0
        self._clock = clock
        self._failures: deque[Failure] = deque()
        self._numbers = itertools.count(1)

    def fail_next(self, status: int, times: int = 1) -> None:
        self._failures.extend([Failure(status=status)] * times)

    def drop_next(self, after_chunks: int, times: int = 1) -> None:
        self._failures.extend([Failure(drop_after_chunks=after_chunks)] * times)

    def running(self) -> list[RequestRecord]:
        return [record for record in self.records if record.outcome == "running"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path = scope["path"]
        if path == "/health":
            self.health_checks += 1
            status = 200 if self.behaviour.healthy else 503
            await _send_json(send, status, {"status": "ok" if status == 200 else "unhealthy"})
        elif path == "/v1/models":
            data = [
                {"id": model, "object": "model", "created": 0, "owned_by": self.name}
                for model in self.models
            ]
            await _send_json(send, 200, {"object": "list", "data": data})
        elif path in _KINDS and scope["method"] == "POST":
            await self._infer(scope, receive, send, _KINDS[path])
        elif path == "/v1/kv/events" and self.kv is not None:
            await self.kv.serve(receive, send)
        else:
            await _send_json(send, 404, _error(f"no route {path}", "not_found_error", 404))

    async def _infer(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        body = await _read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        record = RequestRecord(
            scope["method"],
            scope["path"],
            headers,
            body,
            self._clock(),
            tuple(client) if client else None,
        )
        if self.record:
            self.records.append(record)
        failure = self._failures.popleft() if self._failures else None
        if failure is not None and failure.status is not None:
            await self._fail(send, record, failure.status)
            return
        exchange = _Exchange(self, record, send, failure)
        request = orjson.loads(body)
        problem = _invalid(kind, request)
        if problem is not None:  # what a real engine answers to a malformed request
            error = orjson.dumps(_error(problem, "invalid_request_error", 400))
            await send({"type": "http.response.start", "status": 400, "headers": _json_headers(error)})
            await send({"type": "http.response.body", "body": error})
            record.status, record.outcome, record.ended_s = 400, "failed", self._clock()
            record.done.set()
            return
        try:
            if self.behaviour.ttft_s == 0 and self.behaviour.itl_s == 0:
                await exchange.run(kind, request)  # instant: nothing to cancel
            else:
                await _until_disconnect(exchange.run(kind, request), receive, record)
        finally:
            record.ended_s = self._clock()
            record.done.set()

    async def _fail(self, send: Send, record: RequestRecord, status: int) -> None:
        body = orjson.dumps(_error(f"scripted failure {status}", "server_error", status))
        extra: Headers = ((b"retry-after", b"1"),) if status == 503 else ()
        headers = _json_headers(body) + extra
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        record.status, record.outcome, record.ended_s = status, "failed", self._clock()
        record.sent += body
        record.done.set()

    def next_ident(self) -> tuple[str, str]:
        number = next(self._numbers)
        return f"cmpl-{self.name}-{number}", f"{self.name}#{number}"

    def cached_tokens(self, request: dict[str, Any]) -> int | None:
        learned = self.kv.learn(request) if self.kv is not None else None
        return learned if learned is not None else self.behaviour.cached_tokens


def _invalid(kind: str, request: Any) -> str | None:
    """The few shape checks a real engine makes before generating, as a message, or None."""
    if not isinstance(request, dict):
        return "the body must be a JSON object"
    needs = {"chat": ("messages", list), "completion": ("prompt", (str, list)), "embedding": ("input", (str, list))}
    field, kinds = needs.get(kind, (None, object))
    # Lenient about a missing field (tests send bare bodies), strict about a wrong type.
    if field is not None and field in request and not isinstance(request[field], kinds):
        return f"'{field}' is of the wrong type"
    if kind == "chat" and not all(isinstance(m, dict) for m in request.get("messages", [])):
        return "'messages' must hold objects"
    for name in ("max_tokens", "max_completion_tokens"):
        value = request.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"'{name}' must be a positive integer"
    if not isinstance(request.get("stream", False), bool | None):
        return "'stream' must be a boolean"
    return None


class _Exchange:
    """Writes one response, counting body chunks so a scripted drop can happen mid-way."""

    def __init__(
        self, engine: FakeEngine, record: RequestRecord, send: Send, failure: Failure | None
    ) -> None:
        self._engine = engine
        self._record = record
        self._send = send
        self._drop_after = None if failure is None else failure.drop_after_chunks
        self._chunks = 0

    async def run(self, kind: str, request: dict[str, Any]) -> None:
        try:
            if kind == "embedding":
                await self._embed(request)
            elif request.get("stream"):
                await self._stream(kind, request)
            else:
                await self._complete(kind, request)
        except DroppedConnection:
            self._record.outcome = "dropped"
            raise
        self._record.outcome = "completed"

    async def _start(self, headers: Headers) -> None:
        self._record.status = 200
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _emit(self, chunk: bytes, *, more: bool = True) -> None:
        if self._drop_after is not None and self._chunks >= self._drop_after:
            raise DroppedConnection(f"scripted drop after {self._chunks} chunks")
        self._chunks += 1
        if self._engine.record:
            self._record.sent += chunk
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})

    async def _embed(self, request: dict[str, Any]) -> None:
        behaviour = self._engine.behaviour
        if behaviour.ttft_s:
            await asyncio.sleep(behaviour.ttft_s)
        body = orjson.dumps(payloads.embedding_body(request, behaviour.embedding_dims))
        await self._start(_json_headers(body))
        await self._emit(body, more=False)

    async def _complete(self, kind: str, request: dict[str, Any]) -> None:
        behaviour = self._engine.behaviour
        count = _token_count(request, behaviour)
        delay = behaviour.ttft_s + behaviour.itl_s * max(0, count - 1)
        if delay:
            await asyncio.sleep(delay)
        ident, tag = self._engine.next_ident()
        body = payloads.completion_body(
            kind,
            ident,
            int(time.time()),
            request,
            payloads.pieces(tag, count),
            self._engine.cached_tokens(request),
        )
        data = orjson.dumps(body)
        await self._start(_json_headers(data))
        await self._emit(data, more=False)

    async def _stream(self, kind: str, request: dict[str, Any]) -> None:
        behaviour = self._engine.behaviour
        count = _token_count(request, behaviour)
        ident, tag = self._engine.next_ident()
        created, model = int(time.time()), request.get("model", "")
        cached = self._engine.cached_tokens(request)
        await self._start(_SSE)
        if behaviour.ttft_s:
            await asyncio.sleep(behaviour.ttft_s)
        for index, piece in enumerate(payloads.pieces(tag, count)):
            if index and behaviour.itl_s:
                await asyncio.sleep(behaviour.itl_s)
            await self._emit(
                _frame(
                    payloads.stream_chunk(
                        kind, ident, created, model, piece, None, first=index == 0
                    )
                )
            )
        await self._emit(_frame(payloads.stream_chunk(kind, ident, created, model, None, "length")))
        options = request.get("stream_options") or {}
        if options.get("include_usage"):
            usage = payloads.usage_chunk(kind, ident, created, request, count, cached)
            await self._emit(_frame(usage))
        await self._emit(b"data: [DONE]\n\n", more=False)


async def _until_disconnect(work: Awaitable[None], receive: Receive, record: RequestRecord) -> None:
    """Run ``work`` while listening for the client leaving; leaving cancels it (as a real
    engine stops generating)."""
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not job.done():
            job.cancel()
            await asyncio.wait({job})
            record.outcome = "cancelled"
            return
        job.result()
    finally:
        watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _token_count(request: dict[str, Any], behaviour: Behaviour) -> int:
    wanted = request.get("max_tokens") or request.get("max_completion_tokens")
    return max(1, min(int(wanted), 100_000)) if isinstance(wanted, int) else behaviour.tokens


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status, "headers": _json_headers(body)})
    await send({"type": "http.response.body", "body": body})


def _json_headers(body: bytes) -> Headers:
    return (*_JSON, (b"content-length", str(len(body)).encode()))


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.engine --port 0 --instant``: prints ``PORT <n>``, then serves."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--ttft-s", type=float, default=0.0)
    parser.add_argument("--itl-s", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument(
        "--instant", action="store_true", help="no delays (overrides the two above)"
    )
    parser.add_argument(
        "--kv-blocks",
        type=Path,
        help="what to hold, served on GET /v1/kv/events: a JSON list of block hashes, or of "
        'chains {"hashes": [...], "tokens": [...]} (announced with their tokens)',
    )
    args = parser.parse_args(argv)
    behaviour = Behaviour.instant() if args.instant else Behaviour(args.ttft_s, args.itl_s)
    behaviour.tokens = args.tokens
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    kv = None
    if args.kv_blocks is not None:
        kv = FakeKVEvents(keepalive_s=15.0)
        for held in orjson.loads(args.kv_blocks.read_bytes()):
            if isinstance(held, dict):
                kv.chains.append((tuple(held["hashes"]), tuple(held["tokens"])))
            else:
                kv.held[held] = None
    app = FakeEngine(args.name, behaviour=behaviour, record=False, kv=kv)
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="on", access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
