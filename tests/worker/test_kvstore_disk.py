"""The disk tier: byte bound and LRU eviction, atomic files, restarts, damage, shared directories."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.worker.kvstore_support import BLOCK, COMPAT, hashes, held, state

from corral.prefix.events import BlockRemoved
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.codec import encode, encoded_size
from corral.worker.kvstore.disk import TMP_PREFIX, DiskTier
from corral.worker.kvstore.tier import Candidate
from corral.worker.kvstore.tiered import load_state

A = list(range(1, 17))  # four blocks each
B = list(range(100, 116))
C = list(range(200, 216))
STATE_BYTES = 1000
FILE_BYTES = encoded_size(state(A, STATE_BYTES))


def tier(directory: Path, *, max_bytes: int = 10 * FILE_BYTES, events: KVEventLog | None = None) -> DiskTier:
    disk = DiskTier(
        directory, max_bytes=max_bytes, compat=COMPAT, block_size=BLOCK, hashes=hashes,
        events=events or KVEventLog(block_size=BLOCK),
    )
    disk.open()
    return disk


def store(disk: DiskTier, tokens: list[int], fill: int = 7) -> None:
    disk.store(hashes(tokens), encode(state(tokens, STATE_BYTES, fill), COMPAT))


def load(disk: DiskTier, tokens: list[int]) -> list[int] | None:
    candidate = disk.match(hashes(tokens))
    if candidate is None:
        return None
    loaded = load_state(disk, candidate, COMPAT)
    return None if loaded is None else loaded.tokens.tolist()


def test_a_stored_prefix_is_found_by_a_longer_prompt_and_published_as_disk(tmp_path: Path) -> None:
    events = KVEventLog(block_size=BLOCK)
    disk = tier(tmp_path, events=events)
    store(disk, A)
    assert disk.path(hashes(A)[-1]).stat().st_size == FILE_BYTES
    prompt = A + [999] * 8
    candidate = disk.match(hashes(prompt))
    assert candidate == Candidate(hashes(A)[-1], 4)
    loaded = load_state(disk, candidate, COMPAT)
    assert loaded is not None and loaded.tokens.tolist() == A
    assert held(events) == {"disk": set(hashes(A))}
    assert disk.stats().stored == 1 and disk.stats().entries == 1
    assert disk.match(hashes(B)) is None


def test_past_the_bound_the_least_recently_used_file_goes(tmp_path: Path) -> None:
    events = KVEventLog(block_size=BLOCK)
    disk = tier(tmp_path, max_bytes=2 * FILE_BYTES, events=events)
    store(disk, A)
    store(disk, B)
    assert load(disk, A) == A  # A is now the most recently used
    store(disk, C)
    assert load(disk, B) is None and not disk.path(hashes(B)[-1]).exists()
    assert load(disk, A) == A and load(disk, C) == C
    stats = disk.stats()
    assert stats.nbytes == 2 * FILE_BYTES <= disk.max_bytes and stats.evicted == 1
    removed = [e for b in events.since(0) or [] for e in b.events if isinstance(e, BlockRemoved)]
    assert removed == [BlockRemoved(tuple(hashes(B)), "disk")]
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) <= disk.max_bytes


def test_a_longer_prefix_replaces_the_file_it_contains(tmp_path: Path) -> None:
    disk = tier(tmp_path)
    store(disk, A[:8])
    store(disk, A)
    assert [p.name for p in tmp_path.iterdir()] == [disk.path(hashes(A)[-1]).name]
    assert load(disk, [*A[:8], 5, 5, 5, 5]) == A  # the longer state serves the shorter prompt
    store(disk, A[:8])  # contained in what is held: not written again
    assert len(list(tmp_path.iterdir())) == 1 and disk.stats().stored == 2


def test_the_files_survive_a_restart_in_their_lru_order(tmp_path: Path) -> None:
    first = tier(tmp_path, max_bytes=2 * FILE_BYTES)
    store(first, A)
    store(first, B)
    old = time.time() - 100
    os.utime(first.path(hashes(A)[-1]), (old, old))
    os.utime(first.path(hashes(B)[-1]), (old + 1, old + 1))
    assert load(first, A) == A  # touches A's file: newer than B's now
    first.close()
    events = KVEventLog(block_size=BLOCK)
    second = tier(tmp_path, max_bytes=2 * FILE_BYTES, events=events)
    assert held(events) == {"disk": set(hashes(A)) | set(hashes(B))}
    store(second, C)
    assert load(second, B) is None and load(second, A) == A and load(second, C) == C


def test_a_damaged_file_is_discarded_counted_and_recomputed(tmp_path: Path) -> None:
    events = KVEventLog(block_size=BLOCK)
    disk = tier(tmp_path, events=events)
    store(disk, A)
    path = disk.path(hashes(A)[-1])
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert load(disk, A) is None
    assert not path.exists() and disk.stats().errors == {"corrupt": 1}
    assert held(events) == {} and disk.stats().entries == 0
    store(disk, A)  # the next request stores it again
    assert load(disk, A) == A


def test_open_deletes_what_cannot_be_loaded_and_stale_temporaries(tmp_path: Path) -> None:
    disk = tier(tmp_path)
    store(disk, A)
    store(disk, B)
    foreign = disk.path(hashes(C)[-1])  # a state of another setup
    foreign.write_bytes(encode(state(C, STATE_BYTES), bytes(16)))
    truncated = disk.path(hashes(B)[-1])
    truncated.write_bytes(truncated.read_bytes()[:-10])
    misnamed = tmp_path / f"{12345:016x}.kv"
    misnamed.write_bytes(encode(state(list(range(300, 316))), COMPAT))
    stale = tmp_path / f"{TMP_PREFIX}1-1-abc"
    stale.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / f"{TMP_PREFIX}2-2-abc"  # another process is writing it right now
    fresh.write_bytes(b"being written")
    (tmp_path / "notes.txt").write_text("not ours: left alone")
    reopened = tier(tmp_path)
    assert [e.key for e in reopened.entries()] == [hashes(A)[-1]]
    names = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert names == {disk.path(hashes(A)[-1]).name, fresh.name, "notes.txt"}
    assert reopened.stats().errors == {"incompatible": 1, "corrupt": 2}


def test_writes_are_atomic_and_a_failed_write_is_counted_not_raised(tmp_path: Path) -> None:
    disk = tier(tmp_path / "kv")
    store(disk, A)
    assert [p.name for p in (tmp_path / "kv").iterdir()] == [disk.path(hashes(A)[-1]).name]
    for child in (tmp_path / "kv").iterdir():
        child.unlink()
    (tmp_path / "kv").rmdir()
    (tmp_path / "kv").write_text("the disk went away")  # every write now fails
    store(disk, B)
    store(disk, C)
    assert disk.stats().errors == {"write": 2}
    assert disk.match(hashes(B)) is None


def test_replicas_sharing_a_directory_find_each_others_files(tmp_path: Path) -> None:
    one, two = tier(tmp_path), tier(tmp_path)
    store(one, A)
    time.sleep(0.01)  # a distinct directory mtime, even on coarse clocks
    assert load(two, A) == A
    os.remove(one.path(hashes(A)[-1]))  # "two" evicted it, say
    assert load(one, A) is None and one.stats().errors == {}
