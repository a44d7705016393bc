"""Following workers' KV events into the index: batches, resyncs, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from tests.fakes.engine import FakeEngine
from tests.fakes.kv_events import FakeKVEvents
from tests.router.support import eventually

from corral.prefix.index import PrefixIndex
from corral.router.kv_events import KVEventSubscriber
from corral.router.transport.asgi_transport import ASGITransport

W1, W2 = "http://w1", "http://w2"


def held(index: PrefixIndex, url: str, hashes: list[int]) -> int:
    return index.matched(hashes, [url])[0]


@contextlib.asynccontextmanager
async def following(
    apps: dict[str, FakeEngine], urls: list[str] | None = None, idle_timeout_s: float = 60.0
) -> AsyncIterator[tuple[KVEventSubscriber, PrefixIndex, list[str]]]:
    index = PrefixIndex(max_blocks=10_000, max_bytes=1 << 24)
    wanted = list(apps) if urls is None else urls
    subscriber = KVEventSubscriber(
        index,
        ASGITransport(dict(apps)),
        lambda: wanted,
        reconnect_s=0.01,
        reconnect_max_s=0.05,
        sync_interval_s=0.01,
        idle_timeout_s=idle_timeout_s,
        rng=random.Random(0),
    )
    subscriber.start()
    try:
        yield subscriber, index, wanted
    finally:
        await subscriber.aclose()


async def test_snapshot_then_live_batches() -> None:
    kv = FakeKVEvents()
    kv.store([1, 2, 3])  # held before the router connects: comes in the snapshot
    async with following({W1: FakeEngine("w1", kv=kv)}) as (subscriber, index, _):
        await eventually(lambda: held(index, W1, [1, 2, 3]) == 3)
        kv.store([4], parent=3)
        await eventually(lambda: held(index, W1, [1, 2, 3, 4]) == 4)
        kv.remove([3, 4])
        await eventually(lambda: held(index, W1, [1, 2, 3, 4]) == 2)
        kv.clear()
        await eventually(lambda: held(index, W1, [1]) == 0)
        kv.store([9])
        await eventually(lambda: held(index, W1, [9]) == 1)
        assert subscriber.connects[W1] == 1 and kv.subscriptions == 1


async def test_each_endpoint_has_its_own_blocks() -> None:
    kv1, kv2 = FakeKVEvents(), FakeKVEvents()
    kv1.store([1, 2])
    kv2.store([1])
    apps = {W1: FakeEngine("w1", kv=kv1), W2: FakeEngine("w2", kv=kv2)}
    async with following(apps) as (_, index, _urls):
        await eventually(lambda: index.matched([1, 2], [W1, W2]) == [2, 1])
        kv2.clear()
        await eventually(lambda: index.matched([1, 2], [W1, W2]) == [2, 0])


async def test_disconnect_drops_the_blocks_and_reconnect_resyncs() -> None:
    kv = FakeKVEvents()
    kv.store([1, 2])
    engine = FakeEngine("w1", kv=kv)
    apps = {W1: engine}
    async with following(apps) as (subscriber, index, _):
        await eventually(lambda: held(index, W1, [1, 2]) == 2)
        transport_apps = subscriber._transport.apps  # type: ignore[attr-defined]
        del transport_apps[W1]  # the worker is gone: connections are refused
        kv.disconnect()
        await eventually(lambda: held(index, W1, [1]) == 0)
        kv.store([3])  # the restarted worker holds something new
        kv.remove([2])
        transport_apps[W1] = engine
        await eventually(lambda: held(index, W1, [1, 3]) == 2)
        assert held(index, W1, [1, 2]) == 1
        assert kv.subscriptions == 2 and subscriber.connects[W1] == 2


async def test_a_gap_in_seq_resyncs() -> None:
    kv = FakeKVEvents()
    async with following({W1: FakeEngine("w1", kv=kv)}) as (subscriber, index, _):
        await kv.wait_for_streams()
        kv.store([1])
        await eventually(lambda: held(index, W1, [1]) == 1)
        kv.skip()  # batch n+1 never arrives
        kv.store([2], parent=1)
        await eventually(lambda: kv.subscriptions == 2)
        await eventually(lambda: held(index, W1, [1, 2]) == 2)  # from the new snapshot
        assert subscriber.connects[W1] == 2


async def test_a_silent_stream_resyncs() -> None:
    kv = FakeKVEvents()
    kv.store([5])
    async with following({W1: FakeEngine("w1", kv=kv)}, idle_timeout_s=0.05) as (_, index, _u):
        await eventually(lambda: kv.subscriptions >= 3)  # no keepalives from the fake
        await eventually(lambda: held(index, W1, [5]) == 1)


async def test_a_worker_without_events_is_retried_quietly(caplog: pytest.LogCaptureFixture) -> None:
    kv = FakeKVEvents()
    kv.status = 404
    kv.store([1])
    async with following({W1: FakeEngine("w1", kv=kv)}) as (subscriber, index, _):
        await asyncio.sleep(0.2)
        assert held(index, W1, [1]) == 0 and W1 not in subscriber.connects
        kv.status = 200
        await eventually(lambda: held(index, W1, [1]) == 1)
    warnings = [r for r in caplog.records if "publishes no KV events" in r.getMessage()]
    assert len(warnings) == 1


async def test_endpoints_that_leave_are_forgotten_and_new_ones_followed() -> None:
    kv1, kv2 = FakeKVEvents(), FakeKVEvents()
    kv1.store([1])
    kv2.store([1])
    apps = {W1: FakeEngine("w1", kv=kv1), W2: FakeEngine("w2", kv=kv2)}
    async with following(apps, urls=[W1]) as (subscriber, index, urls):
        await eventually(lambda: index.matched([1], [W1, W2]) == [1, 0])
        urls[:] = [W2]  # discovery changed
        await eventually(lambda: index.matched([1], [W1, W2]) == [0, 1])
        assert subscriber.following == [W2]
    assert len(index) == 0 and kv2.open_streams == 0
