"""Disaggregated prefill through the router, with fake engines as prefill and decode workers."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import generate_latest
from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, started

from corral.config import StackConfig, parse_stack
from corral.router.prefill import prefill_body
from corral.router.transport.asgi_transport import ASGITransport

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "a long document " * 50}],
        "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}


def split_stack(prefill: list[str], decode: list[str], **router: Any) -> StackConfig:
    return parse_stack({
        "router": {"routing": {"policy": "least_loaded"}, "health_interval_s": 60, "prefill_min_tokens": 64,
                   **router},
        "cache": {"redis": {}, "chunk_tokens": 64},
        "models": [{"name": "chat-model", "aliases": ["chat"], "task": "chat", "engine": "vllm",
                    "source": "fake", "replicas": 0, "endpoints": decode, "prefill_endpoints": prefill}],
    })


def posts(engine: FakeEngine) -> list[Any]:
    return [record for record in engine.records if record.method == "POST"]


def metric(app: Any, name: str) -> str:
    return "\n".join(line for line in generate_latest(app.metrics.registry).decode().splitlines()
                     if line.startswith(name))


def test_the_prefill_request_keeps_the_prompt_and_asks_for_one_unstreamed_token() -> None:
    sent = orjson.loads(prefill_body({**CHAT, "max_completion_tokens": 99, "n": 2}))
    assert sent["messages"] == CHAT["messages"] and sent["model"] == "chat"
    assert sent["max_tokens"] == 1 and sent["stream"] is False
    assert not {"stream_options", "max_completion_tokens", "n"} & sent.keys()


async def test_a_prefill_worker_computes_the_prompt_before_a_decode_worker_answers() -> None:
    prefill, decode = FakeEngine("p1"), FakeEngine("d1")
    network = ASGITransport({"http://p1": prefill, "http://d1": decode})
    async with started(split_stack(["http://p1"], ["http://d1"]), network) as app:
        reply = await InMemoryClient(app).post("/v1/chat/completions", CHAT)
        assert reply.status == 200
        assert reply.headers[b"x-corral-endpoint"] == b"http://d1"
        assert b"data: [DONE]" in reply.body
        (first,) = posts(prefill)
        (second,) = posts(decode)
        assert first.started_s <= second.started_s
        assert orjson.loads(first.body)["max_tokens"] == 1
        assert orjson.loads(second.body) == CHAT  # the client's request, unchanged
        assert 'outcome="ok"} 1.0' in metric(app, "corral_router_prefills_total")


async def test_a_failing_prefill_worker_leaves_the_prefill_to_the_decode_worker() -> None:
    prefill, decode = FakeEngine("p1"), FakeEngine("d1")
    prefill.fail_next(500)
    network = ASGITransport({"http://p1": prefill, "http://d1": decode})
    async with started(split_stack(["http://p1"], ["http://d1"]), network) as app:
        reply = await InMemoryClient(app).post("/v1/chat/completions", {**CHAT, "stream": False})
        assert reply.status == 200 and reply.json()["choices"]
        assert len(posts(decode)) == 1
        assert 'outcome="failed"} 1.0' in metric(app, "corral_router_prefills_total")


async def test_without_a_healthy_prefill_worker_the_model_still_answers_and_is_ready() -> None:
    decode = FakeEngine("d1")
    network = ASGITransport({"http://d1": decode})  # http://p1 cannot be reached
    async with started(split_stack(["http://p1"], ["http://d1"]), network) as app:
        client = InMemoryClient(app)
        assert (await client.get("/ready")).status == 200
        reply = await client.post("/v1/chat/completions", CHAT)
        assert reply.status == 200
        assert 'outcome="no_endpoint"} 1.0' in metric(app, "corral_router_prefills_total")


async def test_prefill_errors_of_the_client_reach_it_from_the_decode_worker() -> None:
    prefill, decode = FakeEngine("p1"), FakeEngine("d1")
    network = ASGITransport({"http://p1": prefill, "http://d1": decode})
    async with started(split_stack(["http://p1"], ["http://d1"]), network) as app:
        reply = await InMemoryClient(app).post("/v1/chat/completions", {**CHAT, "messages": "not a list"})
        assert reply.status == 400 and "error" in reply.json()
        assert len(posts(decode)) == 1  # the answer the client reads is the decode worker's


async def test_a_prompt_shorter_than_a_chunk_skips_the_prefill_worker() -> None:
    prefill, decode = FakeEngine("p1"), FakeEngine("d1")
    network = ASGITransport({"http://p1": prefill, "http://d1": decode})
    async with started(split_stack(["http://p1"], ["http://d1"]), network) as app:
        short = {**CHAT, "messages": [{"role": "user", "content": "Hi there"}]}
        assert (await InMemoryClient(app).post("/v1/chat/completions", short)).status == 200
        assert posts(prefill) == [] and len(posts(decode)) == 1
        assert 'outcome="short"} 1.0' in metric(app, "corral_router_prefills_total")


async def test_a_slow_prefill_worker_is_given_up_on_after_the_prefill_timeout() -> None:
    prefill, decode = FakeEngine("p1"), FakeEngine("d1")
    prefill.behaviour.ttft_s = 5.0
    network = ASGITransport({"http://p1": prefill, "http://d1": decode})
    async with started(split_stack(["http://p1"], ["http://d1"], prefill_timeout_s=0.05), network) as app:
        reply = await InMemoryClient(app).post("/v1/chat/completions", {**CHAT, "stream": False})
        assert reply.status == 200 and reply.headers[b"x-corral-endpoint"] == b"http://d1"
        assert 'outcome="failed"} 1.0' in metric(app, "corral_router_prefills_total")


async def test_an_unreachable_prefill_worker_is_ejected_at_once() -> None:
    decode = FakeEngine("d1")
    network = ASGITransport({"http://p1": FakeEngine("p1"), "http://d1": decode})
    async with started(split_stack(["http://p1"], ["http://d1"]), network) as app:
        assert app.pool is not None
        del network.apps["http://p1"]  # it went away after the health check
        assert (await InMemoryClient(app).post("/v1/chat/completions", CHAT)).status == 200
        (prefill,) = app.pool.endpoints("chat-model#prefill")
        assert not prefill.healthy
