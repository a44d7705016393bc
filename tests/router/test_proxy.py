"""The proxy through the in-memory transport: bytes, headers, retries, streams, load."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from tests.fakes.engine import Behaviour, FakeEngine
from tests.router.support import CHAT_MESSAGES, InMemoryClient, make_stack, started

from corral.config import StackConfig
from corral.protocol.sse import DONE, FrameSplitter
from corral.router import create_app
from corral.router.asgi import Receive, Scope, Send
from corral.router.endpoint import Endpoint
from corral.router.routing import RequestContext, build_policy
from corral.router.transport.asgi_transport import ASGITransport
from corral.router.transport.base import StreamError

ODD_BODY = (
    b'{ "model" : "chat",\n  "messages": [{"role":"user","content":"caf\\u00e9 \xe2\x98\x95 \\"q\\""}],'
    b' "temperature": 0.70, "max_tokens": 3 ,"extra":{"z":1,"a":[1.0e2]} }  '
)


def two_replicas(**router: Any) -> tuple[FakeEngine, FakeEngine, ASGITransport, StackConfig]:
    w1, w2 = FakeEngine("w1"), FakeEngine("w2")
    network = ASGITransport({"http://w1": w1, "http://w2": w2})
    return w1, w2, network, make_stack(["http://w1", "http://w2"], policy="round_robin", **router)


async def test_body_reaches_the_worker_byte_for_byte() -> None:
    engine = FakeEngine("w1")
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        reply = await InMemoryClient(app).post("/v1/chat/completions", ODD_BODY)
    assert reply.status == 200
    assert engine.records[0].body == ODD_BODY
    assert reply.body == bytes(engine.records[0].sent)


async def test_headers_that_matter_are_forwarded_hop_by_hop_dropped() -> None:
    engine = FakeEngine("w1")
    sent = [
        ("authorization", "Bearer sk-test"),
        ("x-request-id", "req-42"),
        ("keep-alive", "timeout=5"),
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "1"),
        ("te", "trailers"),
        ("openai-organization", "org-1"),
    ]
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat", "messages": []}, sent
        )
    received = engine.records[0].headers
    assert received["authorization"] == "Bearer sk-test"
    assert received["x-request-id"] == "req-42"
    assert received["content-type"] == "application/json"
    assert received["openai-organization"] == "org-1"
    for dropped in ("keep-alive", "connection", "x-secret-hop", "te"):
        assert dropped not in received
    assert received["host"] == "w1"
    assert reply.headers[b"x-corral-endpoint"] == b"http://w1"


async def test_5xx_before_any_byte_is_retried_on_another_replica() -> None:
    w1, w2, network, stack = two_replicas()
    async with started(stack, network) as app:
        w1.fail_next(503)
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat", "messages": []}
        )
    assert reply.status == 200
    assert [r.outcome for r in w1.records] == ["failed"]
    assert [r.outcome for r in w2.records] == ["completed"]
    assert reply.headers[b"x-corral-endpoint"] == b"http://w2"


async def test_connect_error_ejects_and_retries_elsewhere() -> None:
    _, w2, network, stack = two_replicas()
    async with started(stack, network) as app:
        del network.apps["http://w1"]
        replies = [
            await InMemoryClient(app).post("/v1/chat/completions", {"model": "chat"})
            for _ in range(3)
        ]
        assert app.pool is not None
        assert [e.healthy for e in app.pool.endpoints("chat-model")] == [False, True]
    assert [r.status for r in replies] == [200, 200, 200]
    assert len(w2.records) == 3


async def test_drop_before_first_byte_is_retried() -> None:
    w1, w2, network, stack = two_replicas()
    async with started(stack, network) as app:
        w1.drop_next(after_chunks=0)
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat", "stream": True}
        )
    assert reply.status == 200 and reply.body.endswith(DONE)
    assert [r.outcome for r in w1.records] == ["dropped"]
    assert reply.body == bytes(w2.records[0].sent)


async def test_last_attempts_5xx_is_passed_through_unchanged() -> None:
    w1, w2, network, stack = two_replicas()
    async with started(stack, network) as app:
        w1.fail_next(503)
        w2.fail_next(503)
        reply = await InMemoryClient(app).post("/v1/chat/completions", {"model": "chat"})
    assert reply.status == 503
    assert reply.headers[b"retry-after"] == b"1"
    assert reply.body == bytes(w2.records[0].sent)


async def test_no_retry_when_retries_is_zero() -> None:
    w1, w2, network, stack = two_replicas(retries=0)
    async with started(stack, network) as app:
        w1.fail_next(500)
        reply = await InMemoryClient(app).post("/v1/chat/completions", {"model": "chat"})
    assert reply.status == 500
    assert w2.records == []


async def test_single_replica_is_retried_itself() -> None:
    engine = FakeEngine("w1")
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        engine.fail_next(500)
        reply = await InMemoryClient(app).post("/v1/chat/completions", {"model": "chat"})
    assert reply.status == 200
    assert [r.outcome for r in engine.records] == ["failed", "completed"]


async def test_4xx_from_the_worker_is_passed_through_not_retried() -> None:
    w1, w2, network, stack = two_replicas()
    async with started(stack, network) as app:
        w1.fail_next(400)
        reply = await InMemoryClient(app).post("/v1/chat/completions", {"model": "chat"})
    assert reply.status == 400
    assert reply.body == bytes(w1.records[0].sent)
    assert w2.records == []


async def test_stream_failure_after_first_byte_ends_with_an_error_frame() -> None:
    engine = FakeEngine("w1")
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        engine.drop_next(after_chunks=3)
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat", "stream": True}
        )
        assert app.pool is not None
        assert app.pool.endpoints("chat-model")[0].in_flight == 0
    assert reply.status == 200
    sent = bytes(engine.records[0].sent)
    assert reply.body.startswith(sent) and sent.count(b"data: ") == 3
    frames = list(FrameSplitter().feed(reply.body[len(sent) :]))
    assert len(frames) == 1
    error = orjson.loads(frames[0])["error"]
    assert error["code"] == "upstream_error" and "mid-stream" in error["message"]
    assert len(engine.records) == 1  # not retried: the client already had bytes


async def test_json_body_failure_after_first_byte_truncates() -> None:
    async def half_json(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "x", ', "more_body": True})
        raise ConnectionResetError("worker died")

    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": half_json})) as app:
        client_side = ASGITransport({"http://router": app})
        response = await client_side.send(
            "http://router", "/v1/chat/completions", b'{"model":"chat"}', []
        )
        chunks = aiter(response.chunks())
        assert await anext(chunks) == b'{"id": "x", '
        with pytest.raises(StreamError):
            await anext(chunks)  # no clean end: the client can tell the body is cut short
        await response.aclose()


async def test_in_flight_counts_while_streaming_and_least_loaded_spreads() -> None:
    w1, w2 = (
        FakeEngine("w1", behaviour=Behaviour(itl_s=0.02, tokens=5)),
        FakeEngine("w2", behaviour=Behaviour(itl_s=0.02, tokens=5)),
    )
    network = ASGITransport({"http://w1": w1, "http://w2": w2})
    async with started(make_stack(["http://w1", "http://w2"]), network) as app:
        client = InMemoryClient(app)
        body = {"model": "chat", "stream": True}
        tasks = [asyncio.create_task(client.post("/v1/chat/completions", body)) for _ in range(6)]
        await asyncio.sleep(0.03)
        assert app.pool is not None
        assert [e.in_flight for e in app.pool.endpoints("chat-model")] == [3, 3]
        await asyncio.gather(*tasks)
        assert [e.in_flight for e in app.pool.endpoints("chat-model")] == [0, 0]
    assert (len(w1.records), len(w2.records)) == (3, 3)


async def test_client_leaving_cancels_the_worker_request() -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(itl_s=0.02, tokens=100))
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        client_side = ASGITransport({"http://router": app})
        body = orjson.dumps({"model": "chat", "stream": True})
        response = await client_side.send("http://router", "/v1/chat/completions", body, [])
        chunks = aiter(response.chunks())
        await anext(chunks)
        await anext(chunks)
        await response.aclose()
        assert await engine.records[0].wait(1.0) == "cancelled"
        assert app.pool is not None
        assert app.pool.endpoints("chat-model")[0].in_flight == 0


async def test_embeddings_and_completions_pass_through() -> None:
    chat, embed = FakeEngine("w1"), FakeEngine("e1")
    network = ASGITransport({"http://w1": chat, "http://e1": embed})
    async with started(make_stack(["http://w1"], ["http://e1"]), network) as app:
        client = InMemoryClient(app)
        embedded = await client.post("/v1/embeddings", {"model": "embed", "input": ["a", "b"]})
        completed = await client.post(
            "/v1/completions", {"model": "chat-model", "prompt": "x", "max_tokens": 2}
        )
    assert embedded.status == 200 and len(embedded.json()["data"]) == 2
    assert completed.status == 200 and completed.json()["usage"]["completion_tokens"] == 2
    assert embed.records[0].path == "/v1/embeddings" and chat.records[0].path == "/v1/completions"


async def test_models_listing_has_every_name_and_task() -> None:
    async with started(make_stack(["http://w1"], ["http://e1"]), ASGITransport({})) as app:
        client = InMemoryClient(app)
        listing = (await client.get("/v1/models")).json()
        one = await client.get("/v1/models/embed")
        missing = await client.get("/v1/models/nope")
    assert listing["object"] == "list"
    by_id = {entry["id"]: entry for entry in listing["data"]}
    assert set(by_id) == {"chat-model", "chat", "embed-model", "embed"}
    assert all(
        entry["owned_by"] == "corral" and entry["object"] == "model" for entry in by_id.values()
    )
    assert by_id["chat"]["root"] == "chat-model" and by_id["chat"]["task"] == "chat"
    assert one.json()["root"] == "embed-model" and one.json()["task"] == "embedding"
    assert missing.status == 404


class RecordingPolicy:
    """Wraps a real policy and keeps the context each pick saw."""

    name = "recording"

    def __init__(self) -> None:
        self.inner = build_policy("least_loaded", rng=random.Random(0))
        self.seen: list[tuple[RequestContext, list[int]]] = []

    async def prepare(self, ctx: RequestContext) -> None:
        await self.inner.prepare(ctx)

    def pick(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Endpoint | None:
        self.seen.append((ctx, [endpoint.in_flight for endpoint in candidates]))
        return self.inner.pick(ctx, candidates)


async def test_policy_sees_the_request_context_and_candidate_load() -> None:
    engine = FakeEngine("w1")
    policy = RecordingPolicy()
    app = create_app(
        make_stack(["http://w1"]), transport=ASGITransport({"http://w1": engine}), policy=policy
    )
    await app.startup()
    try:
        body = {"model": "chat", "user": "u7", "messages": CHAT_MESSAGES, "stream": False}
        reply = await InMemoryClient(app).post("/v1/chat/completions", body, [("x-session", "s1")])
    finally:
        await app.shutdown()
    assert reply.status == 200
    ((ctx, loads),) = policy.seen
    assert (ctx.model, ctx.task, ctx.path, ctx.user) == (
        "chat-model",
        "chat",
        "/v1/chat/completions",
        "u7",
    )
    assert ctx.body == body
    assert ctx.headers["x-session"] == "s1"
    assert loads == [0]


async def test_a_proxied_request_leaves_no_reference_cycle_behind() -> None:
    """Cycles outlive the young collections under load and wait for a full one (the router
    runs those on a timer): whatever a request allocates must go with it by refcount."""
    import gc

    engine = FakeEngine("w1")
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        await client.post("/v1/chat/completions", ODD_BODY)  # warm: lazily built objects
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for stream in (False, True, False):
                body = {"model": "chat", "messages": CHAT_MESSAGES, "max_tokens": 3, "stream": stream}
                assert (await client.post("/v1/chat/completions", orjson.dumps(body))).status == 200
            await asyncio.sleep(0)  # the disconnect watches see their responses complete
            gc.collect()
            left = sorted({type(obj).__qualname__ for obj in gc.garbage})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert "DisconnectWatch" not in left and "CancelledError" not in left, left
