"""KV events: the block ledger, the bounded log, and the SSE feed of a worker."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Hashable

import aiohttp
import orjson
import pytest
from tests.worker.support import FakePrefixEngine, FakeTextEngine, model_config, running

from corral.prefix.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, KVEvent
from corral.prefix.hashing import block_hashes
from corral.protocol.sse import FrameSplitter
from corral.worker.app import create_app
from corral.worker.kv_events import BlockLedger, KVEventFeed, KVEventLog


def chain(tokens: list[int]) -> list[int]:
    return block_hashes(tokens, block_size=4, seed="m")


A2 = chain(list(range(16)))  # user A's two rounds: four blocks
A3 = chain(list(range(24)))  # ...and three rounds: the same four, then two more
B2 = chain(list(range(8)) + [99] * 8)  # user B shares A's first two blocks


def apply(held: set[int], events: list[KVEvent]) -> None:
    """What a router does with events: parents come first, removals name held blocks."""
    for event in events:
        if isinstance(event, AllBlocksCleared):
            held.clear()
        elif isinstance(event, BlockStored):
            assert event.parent_block_hash is None or event.parent_block_hash in held
            assert not held & set(event.block_hashes)
            held.update(event.block_hashes)
        else:
            assert set(event.block_hashes) <= held
            held.difference_update(event.block_hashes)


def test_a_block_shared_by_two_holders_is_removed_when_the_last_lets_go() -> None:
    ledger = BlockLedger(block_size=4)
    ledger.hold("a2", A2)
    assert ledger.drain() == [BlockStored(tuple(A2), None, 4, "ram")]
    ledger.hold("a3", A3)
    assert ledger.drain() == [BlockStored(tuple(A3[4:]), A2[-1], 4, "ram")]
    ledger.release("a2")
    assert ledger.drain() == []  # a3 still holds all of a2's blocks
    ledger.release("a3")
    assert ledger.drain() == [BlockRemoved(tuple(A3), "ram")]
    assert len(ledger) == 0


def test_stored_blocks_carry_the_tokens_they_were_hashed_from() -> None:
    ledger = BlockLedger(block_size=4)
    ledger.hold("a2", A2, tokens=list(range(18)))  # two tokens past the last full block
    assert ledger.drain() == [BlockStored(tuple(A2), None, 4, "ram", tuple(range(16)))]
    ledger.hold("a3", A3, tokens=list(range(24)))
    assert ledger.drain() == [BlockStored(tuple(A3[4:]), A2[-1], 4, "ram", tuple(range(16, 24)))]
    ledger.hold("b2", B2)  # tokens not given: none published
    assert ledger.drain() == [BlockStored(tuple(B2[2:]), B2[1], 4, "ram")]
    assert ledger.snapshot() == [
        AllBlocksCleared(),
        BlockStored(tuple(A2), None, 4, "ram", tuple(range(16))),
        BlockStored(tuple(A3[4:]), A2[-1], 4, "ram", tuple(range(16, 24))),
        BlockStored(tuple(B2[2:]), B2[1], 4, "ram"),
    ]


def test_a_holder_that_moves_on_reports_only_the_difference() -> None:
    ledger = BlockLedger(block_size=4)
    ledger.hold("context", A2)
    ledger.drain()
    ledger.hold("context", B2)
    assert ledger.drain() == [
        BlockStored(tuple(B2[2:]), B2[1], 4, "ram"),
        BlockRemoved(tuple(A2[2:]), "ram"),
    ]
    ledger.hold("context", B2)
    assert ledger.drain() == []


def test_events_and_snapshots_agree_with_the_ledger_whatever_happens() -> None:
    rng = random.Random(4)
    chains = [chain([rng.randrange(3) for _ in range(4 * rng.randint(1, 5))]) for _ in range(30)]
    ledger = BlockLedger(block_size=4)
    mirror: set[int] = set()
    holders: list[Hashable] = ["context", *range(6)]
    for _ in range(300):
        holder = rng.choice(holders)
        if rng.random() < 0.3:
            ledger.release(holder)
        else:
            ledger.hold(holder, rng.choice(chains))
        apply(mirror, ledger.drain())
        fresh: set[int] = set()
        apply(fresh, ledger.snapshot())
        assert mirror == fresh
        assert len(ledger) == len(mirror) and all(h in ledger for h in mirror)


def test_the_log_numbers_batches_and_knows_who_fell_behind() -> None:
    log = KVEventLog(block_size=4, capacity=2, clock=lambda: 12.5)
    woken: list[int] = []
    remove = log.add_listener(lambda: woken.append(log.seq))
    with log.recording():
        pass  # nothing changed: no batch
    with log.recording() as ledger:
        ledger.hold("a", A2)
        ledger.hold("b", B2)
    assert log.seq == 1 and woken == [1]
    assert log.since(0) == [
        EventBatch(
            1,
            12.5,
            (BlockStored(tuple(A2), None, 4, "ram"), BlockStored(tuple(B2[2:]), B2[1], 4, "ram")),
        )
    ]
    with pytest.raises(RuntimeError), log.recording() as ledger:
        ledger.release("a")
        raise RuntimeError("the engine broke halfway")
    assert log.seq == 2  # what changed was published all the same
    with log.recording() as ledger:
        ledger.release("b")
    assert [batch.seq for batch in log.since(1) or []] == [2, 3]
    assert log.since(0) is None  # batch 1 is gone: that subscriber must resync
    assert log.since(3) == []
    snapshot = log.snapshot()
    assert (snapshot.seq, snapshot.events) == (3, (AllBlocksCleared(),))
    remove()
    with log.recording() as ledger:
        ledger.hold("a", A2)
    assert woken == [1, 2, 3]


async def test_a_quiet_feed_sends_keepalives_and_ends_when_closed() -> None:
    feed = KVEventFeed(KVEventLog(block_size=4, clock=lambda: 5.0), keepalive_s=0.01)
    frames = feed.subscribe().frames()
    first = b'data: {"seq":0,"ts":5.0,"events":[{"type":"AllBlocksCleared"}]}\n\n'
    assert await anext(frames) == first
    assert await anext(frames) == b": keepalive\n\n"
    assert feed.subscribers == 1
    feed.close()
    assert [frame async for frame in frames] == []
    assert feed.subscribers == 0


# -- over HTTP ---------------------------------------------------------------------------


async def payloads(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, object]]:
    splitter = FrameSplitter()
    async for chunk in response.content.iter_any():
        for data in splitter.feed(chunk):
            yield orjson.loads(data)


async def test_the_stream_opens_with_a_snapshot_then_follows_the_engine_thread() -> None:
    engine = FakePrefixEngine()
    with engine.kv_events.recording() as ledger:
        ledger.hold("a", A2)
    async with (
        running(create_app(model_config(), engine)) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/kv/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        batches = payloads(response)
        snapshot = EventBatch.from_dict(await anext(batches))
        assert snapshot.seq == 1
        assert snapshot.events == (AllBlocksCleared(), BlockStored(tuple(A2), None, 4, "ram"))

        def engine_thread() -> None:
            with engine.kv_events.recording() as ledger:
                ledger.hold("b", B2)

        threading.Thread(target=engine_thread).start()
        live = EventBatch.from_dict(await anext(batches))
        assert live.seq == 2
        assert live.events == (BlockStored(tuple(B2[2:]), B2[1], 4, "ram"),)


async def test_a_subscriber_that_falls_behind_is_disconnected_and_resyncs() -> None:
    engine = FakePrefixEngine(kv_events=KVEventLog(block_size=4, capacity=3))
    async with (
        running(create_app(model_config(), engine)) as url,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{url}/v1/kv/events") as response:
            batches = payloads(response)
            assert (await anext(batches))["seq"] == 0
            for holder in range(10):  # faster than the subscriber can be woken
                with engine.kv_events.recording() as ledger:
                    ledger.hold(holder, chain([holder] * 4))
            async with asyncio.timeout(5):
                assert [batch async for batch in batches] == []  # the server ended it
        async with session.get(f"{url}/v1/kv/events") as response:
            snapshot = EventBatch.from_dict(await anext(payloads(response)))
            assert snapshot.seq == 10 and len(snapshot.events) == 11


async def test_blocks_is_the_snapshot_with_the_stores_stats() -> None:
    engine = FakePrefixEngine()
    with engine.kv_events.recording() as ledger:
        ledger.hold("a", A2)
    async with (
        running(create_app(model_config(), engine)) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/kv/blocks") as response,
    ):
        body = await response.json()
    assert EventBatch.from_dict(body).events[1] == BlockStored(tuple(A2), None, 4, "ram")
    assert body["store"] == {
        "entries": 1,
        "blocks": 2,
        "nbytes": 300,
        "capacity_bytes": 1000,
        "hits": 0,
        "hit_tokens": 0,
        "stored": 0,
        "evicted": 0,
        "misses": 0,
        "tiers": {},
    }


async def test_open_streams_end_when_the_server_starts_draining() -> None:
    engine = FakePrefixEngine()
    app = create_app(model_config(), engine)
    async with (
        running(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/kv/events") as response,
    ):
        batches = payloads(response)
        await anext(batches)
        app.state.end_streams()
        async with asyncio.timeout(5):
            assert [batch async for batch in batches] == []


async def test_engines_without_prefix_caching_have_no_kv_routes(
    fake_engine: FakeTextEngine,
) -> None:
    async with (
        running(create_app(model_config(), fake_engine)) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/kv/blocks") as response,
    ):
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "not_found_error"
