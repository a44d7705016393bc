"""A fake OpenAI-compatible engine with scripted latency, for the bench tests.

Run as a process: ``python fake_engine.py --ttft-ms 40 --itl-ms 10`` prints ``PORT <n>`` once
it listens on 127.0.0.1. Streams chat and completions: the first chunk ``--ttft-ms`` after the
request arrived, then one chunk every ``--itl-ms`` (times are absolute from the arrival, so
they do not drift), ``max_tokens`` tokens (or ``--tokens``), a usage chunk, ``[DONE]``.
Chunks leave within ~0.1 ms of their due time (sleep, then spin the last 3 ms), so the tests
can check that the benchmark recovers the script. ``/tokenize`` counts whitespace-separated
words, which makes prompt lengths exact.
Plain asyncio streams, no framework: small and fast enough for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import orjson

SPIN_S = 0.003


class Script:
    def __init__(self, args: argparse.Namespace) -> None:
        self.ttft_s = args.ttft_ms / 1000
        self.itl_s = args.itl_ms / 1000
        self.tokens = args.tokens
        self.usage = not args.no_usage
        self.tokenize = not args.no_tokenize
        self.fail_every = args.fail_every
        self.log = open(args.log, "ab") if args.log else None
        self.requests = 0
        #: At most this many answers stream at once; the others wait (a server with a capacity).
        self.slots = asyncio.Semaphore(args.max_parallel) if args.max_parallel else None


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, script: Script
) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = asyncio.get_running_loop().time()
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (h.partition(":") for h in header_lines if h)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            await route(method, path, body, writer, script, arrived)


async def route(
    method: str,
    path: str,
    body: bytes,
    writer: asyncio.StreamWriter,
    script: Script,
    arrived: float,
) -> None:
    if method == "GET" and path == "/v1/models":
        return await send_json(
            writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]}
        )
    if method == "POST" and path == "/tokenize" and script.tokenize:
        prompt = orjson.loads(body).get("prompt", "")
        words = prompt.split()
        return await send_json(
            writer, 200, {"tokens": list(range(len(words))), "count": len(words)}
        )
    if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
        request = orjson.loads(body)
        if script.log is not None:
            script.log.write(orjson.dumps(request) + b"\n")
            script.log.flush()
        script.requests += 1
        if script.fail_every and script.requests % script.fail_every == 0:
            error = {
                "error": {"message": "scripted overload", "type": "overloaded_error", "code": 503}
            }
            return await send_json(writer, 503, error)
        chat = path.endswith("chat/completions")
        if script.slots is None:
            return await stream(writer, script, request, chat, arrived)
        async with script.slots:
            return await stream(writer, script, request, chat, asyncio.get_running_loop().time())
    return await send_json(
        writer, 404, {"error": {"message": f"no route {path}", "type": "not_found_error"}}
    )


async def send_json(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _prompt_words(request: dict[str, Any]) -> int:
    if "messages" in request:
        return sum(len(str(m.get("content", "")).split()) for m in request["messages"])
    return len(str(request.get("prompt", "")).split())


async def stream(
    writer: asyncio.StreamWriter,
    script: Script,
    request: dict[str, Any],
    chat: bool,
    arrived: float,
) -> None:
    loop = asyncio.get_running_loop()
    n = script.tokens or int(request.get("max_tokens") or 16)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for i in range(n):
        due = arrived + script.ttft_s + i * script.itl_s
        if due - loop.time() > SPIN_S:  # timers fire ~1 ms late: sleep most, spin the rest
            await asyncio.sleep(due - loop.time() - SPIN_S)
        while loop.time() < due:
            pass
        finish = "length" if i == n - 1 else None
        if chat:
            choice = {"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": f"tok{i} ", "finish_reason": finish}
        writer.write(_chunk(b"data: " + orjson.dumps({"id": "x", "choices": [choice]}) + b"\n\n"))
        await writer.drain()
    if script.usage and (request.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": _prompt_words(request), "completion_tokens": n, "total_tokens": 0}
        writer.write(
            _chunk(b"data: " + orjson.dumps({"id": "x", "choices": [], "usage": usage}) + b"\n\n")
        )
    writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()


async def main(args: argparse.Namespace) -> None:
    script = Script(args)
    server = await asyncio.start_server(lambda r, w: handle(r, w, script), "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=0, help="tokens per answer (0: max_tokens)")
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--no-tokenize", action="store_true")
    parser.add_argument("--fail-every", type=int, default=0, help="every Nth request gets a 503")
    parser.add_argument("--max-parallel", type=int, default=0, help="answers streaming at once (0: any)")
    parser.add_argument("--log", default=None, help="append each request body as a JSON line")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(parse_args(sys.argv[1:])))
    except KeyboardInterrupt:
        pass
