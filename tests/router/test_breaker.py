"""The circuit breaker: failed answers in a row eject an endpoint; a passing health check restores it."""

from __future__ import annotations

from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, make_stack, started

from corral.router.transport.asgi_transport import ASGITransport

CHAT = {"model": "chat", "messages": []}


async def test_three_failures_in_a_row_open_the_breaker_until_a_health_check_passes() -> None:
    w1, w2 = FakeEngine("w1"), FakeEngine("w2")
    network = ASGITransport({"http://w1": w1, "http://w2": w2})
    stack = make_stack(["http://w1", "http://w2"], policy="round_robin", retries=0, breaker_failures=3)
    async with started(stack, network) as app:
        client = InMemoryClient(app)
        w1.fail_next(500, times=3)
        statuses = [(await client.post("/v1/chat/completions", CHAT)).status for _ in range(6)]
        assert statuses == [500, 200, 500, 200, 500, 200]
        assert app.pool is not None
        (first,) = [e for e in app.pool.endpoints("chat-model") if e.url == "http://w1"]
        assert not first.healthy and "3 failures in a row" in (first.last_error or "")
        before = len(w1.records)
        for _ in range(4):
            assert (await client.post("/v1/chat/completions", CHAT)).status == 200
        assert len(w1.records) == before  # open: no traffic to w1
        await app.pool.refresh()  # the half-open probe: w1's /health answers 200 again
        assert first.healthy and first.consecutive_failures == 0
        for _ in range(2):
            await client.post("/v1/chat/completions", CHAT)
        assert len(w1.records) == before + 1


async def test_a_success_resets_the_count() -> None:
    w1 = FakeEngine("w1")
    stack = make_stack(["http://w1"], retries=0, breaker_failures=2)
    async with started(stack, ASGITransport({"http://w1": w1})) as app:
        client = InMemoryClient(app)
        for _ in range(3):
            w1.fail_next(503)
            assert (await client.post("/v1/chat/completions", CHAT)).status == 503
            assert (await client.post("/v1/chat/completions", CHAT)).status == 200
        assert app.pool is not None and all(e.healthy for e in app.pool.endpoints("chat-model"))
