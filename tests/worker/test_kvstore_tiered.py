"""LowerTiers: the lookup order, token confirmation, fallbacks and the write-through; the writer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tests.worker.kvstore_support import BLOCK, COMPAT, MemoryTier, hashes, held, state

from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.codec import encode
from corral.worker.kvstore.disk import DiskTier
from corral.worker.kvstore.tiered import LowerTiers
from corral.worker.kvstore.writer import BackgroundWriter

PROMPT = list(range(1, 41))  # ten blocks


def tiers(*members: MemoryTier | DiskTier, writer: BackgroundWriter | None = None) -> LowerTiers:
    return LowerTiers(members, compat=COMPAT, block_size=BLOCK, chunk_tokens=2 * BLOCK, writer=writer)


def put(tier: MemoryTier, tokens: list[int], tokens_in_state: list[int] | None = None) -> None:
    tier.store(hashes(tokens), encode(state(tokens_in_state or tokens), COMPAT))


def test_the_longest_prefix_wins_and_a_tie_goes_to_the_faster_tier() -> None:
    disk, redis = MemoryTier("disk"), MemoryTier("redis", chunked=True)
    put(disk, PROMPT[:16])
    put(redis, PROMPT[:32])
    lower = tiers(disk, redis)
    found = lower.find(PROMPT, hashes(PROMPT), better_than=0)
    assert found is not None and found.tier is redis and found.reusable == 32
    assert (disk.stats().misses, redis.stats().misses) == (1, 0)
    put(disk, PROMPT[:32])
    found = lower.find(PROMPT, hashes(PROMPT), better_than=0)
    assert found is not None and found.tier is disk and redis.loads == 1  # not consulted


def test_nothing_is_loaded_unless_it_beats_what_the_context_has() -> None:
    disk = MemoryTier("disk")
    put(disk, PROMPT[:16])
    lower = tiers(disk)
    assert lower.find(PROMPT, hashes(PROMPT), better_than=16) is None
    assert disk.loads == 0
    found = lower.find(PROMPT, hashes(PROMPT), better_than=15)
    assert found is not None and found.reusable == 16


def test_a_whole_prompt_match_leaves_its_last_token_to_replay() -> None:
    disk = MemoryTier("disk")
    put(disk, PROMPT)
    found = tiers(disk).find(PROMPT, hashes(PROMPT), better_than=0)
    assert found is not None and found.reusable == len(PROMPT) - 1


def test_a_hash_collision_never_loads_another_prompts_kv() -> None:
    disk = MemoryTier("disk")
    put(disk, PROMPT[:16], tokens_in_state=PROMPT[:8] + [0] * 8)  # same hashes, other tokens
    found = tiers(disk).find(PROMPT, hashes(PROMPT), better_than=8)
    assert found is None and disk.stats().misses == 1


def test_a_corrupt_state_falls_back_to_the_next_tier() -> None:
    disk, redis = MemoryTier("disk"), MemoryTier("redis", chunked=True)
    put(redis, PROMPT[:24])
    chain = hashes(PROMPT[:32])
    disk.blobs[tuple(chain)] = encode(state(PROMPT[:32]), COMPAT)[:-5]
    found = tiers(disk, redis).find(PROMPT, hashes(PROMPT), better_than=0)
    assert found is not None and found.tier is redis and found.reusable == 24
    assert disk.stats().errors == {"corrupt": 1} and not disk.blobs


def test_a_tier_that_is_down_is_skipped() -> None:
    disk = MemoryTier("disk")
    put(disk, PROMPT[:16])
    disk.up = False
    lower = tiers(disk)
    assert lower.find(PROMPT, hashes(PROMPT), better_than=0) is None
    assert not lower.wants(hashes(PROMPT[:16]))


def test_write_through_goes_to_every_tier_lacking_the_prefix(tmp_path: Path) -> None:
    events = KVEventLog(block_size=BLOCK)
    disk = DiskTier(tmp_path, max_bytes=1 << 20, compat=COMPAT, block_size=BLOCK, hashes=hashes, events=events)
    disk.open()
    redis = MemoryTier("redis", chunked=True)
    lower = tiers(disk, redis, writer=BackgroundWriter(name="test-writer"))
    chain = hashes(PROMPT[:32])
    assert lower.cut(len(hashes(PROMPT))) == 10 // 2 * 2
    assert lower.wants(chain)
    lower.keep(chain, state(PROMPT[:32]))
    assert lower.flush(10)
    assert not lower.wants(chain)
    assert redis.holds(chain) and disk.holds(chain)
    assert held(events) == {"disk": set(chain)}
    lower.keep(chain, state(PROMPT[:32]), sync=True)  # held everywhere: nothing written
    assert [s.stored for s in lower.stats()] == [1, 1]
    lower.close()
    assert held(events) == {}


def test_a_full_write_queue_drops_and_counts() -> None:
    gate = threading.Event()
    writer = BackgroundWriter(name="test-writer", capacity=1)
    assert writer.submit(gate.wait)  # running
    assert writer.flush(0.05) is False
    disk = MemoryTier("disk")
    lower = tiers(disk, writer=writer)
    lower.keep(hashes(PROMPT[:8]), state(PROMPT[:8]))  # queued
    lower.keep(hashes(PROMPT[:16]), state(PROMPT[:16]))  # no room
    assert disk.stats().errors == {"dropped": 1}
    lower.keep(hashes(PROMPT[:24]), state(PROMPT[:24]), sync=True)  # never queued
    assert disk.holds(hashes(PROMPT[:24]))
    gate.set()
    assert writer.flush(10) and disk.holds(hashes(PROMPT[:8]))
    assert writer.close(10)
    assert not writer.submit(lambda: None)


def test_a_write_that_raises_is_logged_and_the_writer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    writer = BackgroundWriter(name="test-writer")
    done: list[int] = []

    def broken() -> None:
        raise RuntimeError("a bug")

    assert writer.submit(broken) and writer.submit(lambda: done.append(1))
    assert writer.flush(10) and done == [1]
    assert "a write to the KV tiers failed" in caplog.text
    writer.close(10)
