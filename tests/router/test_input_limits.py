"""Input limits the router enforces before any worker sees the request."""

from __future__ import annotations

from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, started

from corral.config import parse_stack
from corral.router.transport.asgi_transport import ASGITransport


def _stack():
    return parse_stack({
        "router": {"health_interval_s": 60},
        "models": [{"name": "chat-model", "aliases": ["chat"], "task": "chat", "engine": "vllm", "source": "fake",
                    "replicas": 0, "endpoints": ["http://w1"], "context_length": 1024, "max_tokens_cap": 256}],
    })


async def test_max_tokens_over_the_cap_or_the_context_never_reaches_a_worker() -> None:
    engine = FakeEngine("w1")
    async with started(_stack(), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        capped = await client.post("/v1/chat/completions", {"model": "chat", "messages": [], "max_tokens": 300})
        assert capped.status == 400 and capped.json()["error"]["param"] == "max_tokens"
        assert "over the limit of 256" in capped.json()["error"]["message"]
        ok = await client.post("/v1/chat/completions", {"model": "chat", "messages": [], "max_completion_tokens": 256})
        assert ok.status == 200
    assert len(engine.records) == 1


async def test_max_tokens_beyond_the_context_is_a_context_length_error() -> None:
    stack = _stack()
    model = stack.models[0].model_copy(update={"max_tokens_cap": None})
    stack = stack.model_copy(update={"models": (model,)})
    async with started(stack, ASGITransport({"http://w1": FakeEngine("w1")})) as app:
        reply = await InMemoryClient(app).post("/v1/completions", {"model": "chat", "prompt": "x", "max_tokens": 1024})
    assert reply.status == 400 and reply.json()["error"]["code"] == "context_length_exceeded"
