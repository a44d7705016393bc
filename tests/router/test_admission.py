"""Overload control: requests beyond the workers' capacity wait in a bounded FIFO, then 503."""

from __future__ import annotations

import asyncio

import pytest
from tests.fakes.engine import Behaviour, FakeEngine
from tests.router.support import InMemoryClient, started

from corral.config import parse_stack
from corral.errors import OverloadedError
from corral.router.admission import ModelQueue
from corral.router.transport.asgi_transport import ASGITransport


async def test_fifo_waits_for_room_and_refuses_past_the_queue() -> None:
    queue = ModelQueue("m", lambda: 2, queue_size=1, wait_s=5)
    await queue.enter()
    await queue.enter()
    third = asyncio.ensure_future(queue.enter())
    await asyncio.sleep(0)
    assert not third.done() and queue.waiting == 1
    with pytest.raises(OverloadedError, match="at capacity"):
        await queue.enter()
    queue.leave()
    await asyncio.wait_for(third, 1)  # handed the freed slot
    assert queue.waiting == 0


async def test_a_waiter_that_times_out_or_is_cancelled_leaks_no_slot() -> None:
    queue = ModelQueue("m", lambda: 1, queue_size=4, wait_s=0.05)
    await queue.enter()
    with pytest.raises(OverloadedError, match="stayed at capacity"):
        await queue.enter()
    cancelled = asyncio.ensure_future(queue.enter())
    await asyncio.sleep(0)
    cancelled.cancel()
    queue.leave()
    await asyncio.wait_for(queue.enter(), 1)  # the one slot is free again


async def test_no_healthy_endpoint_means_no_router_limit() -> None:
    queue = ModelQueue("m", lambda: 0, queue_size=0, wait_s=1)
    for _ in range(10):
        await queue.enter()


async def test_the_router_sheds_load_past_capacity_with_503() -> None:
    stack = parse_stack({
        "router": {"health_interval_s": 60, "queue_size": 1, "queue_wait_s": 5},
        "models": [{"name": "chat-model", "aliases": ["chat"], "task": "chat", "engine": "llamacpp",
                    "source": "fake", "queue_size": 1, "replicas": 0, "endpoints": ["http://w1"]}],
    })
    engine = FakeEngine("w1", behaviour=Behaviour(ttft_s=0.3))
    async with started(stack, ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        body = {"model": "chat", "messages": [], "max_tokens": 1}
        replies = await asyncio.gather(*[client.post("/v1/chat/completions", body) for _ in range(4)])
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200, 200, 200, 503]  # 2 at the worker (1 running + 1 queued), 1 waits, 1 refused
    refused = next(reply for reply in replies if reply.status == 503)
    assert refused.headers[b"retry-after"] == b"1"
    assert refused.json()["error"]["type"] == "overloaded_error"
