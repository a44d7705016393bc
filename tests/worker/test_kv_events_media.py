"""The block ledger with several media: each medium stores and removes its blocks on its own."""

from __future__ import annotations

import random

from tests.worker.kvstore_support import replay

from corral.prefix.events import BlockRemoved, BlockStored
from corral.prefix.hashing import block_hashes
from corral.worker.kv_events import BlockLedger


def chain(tokens: list[int]) -> list[int]:
    return block_hashes(tokens, block_size=4, seed="m")


A = chain(list(range(16)))
A_LONGER = chain(list(range(24)))


def test_a_block_in_ram_and_on_disk_is_removed_per_medium() -> None:
    ledger = BlockLedger(block_size=4)
    ledger.hold("context", A)
    ledger.hold(("disk", 1), A, "disk")
    assert ledger.drain() == [BlockStored(tuple(A), None, 4, "ram"), BlockStored(tuple(A), None, 4, "disk")]
    ledger.release("context")
    assert ledger.drain() == [BlockRemoved(tuple(A), "ram")]
    assert A[0] in ledger and ledger.holds(A[0], "disk") and not ledger.holds(A[0], "ram")
    ledger.hold(("disk", 2), A_LONGER, "disk")
    assert ledger.drain() == [BlockStored(tuple(A_LONGER[4:]), A[-1], 4, "disk")]
    ledger.release(("disk", 1))
    ledger.release(("disk", 2))
    assert ledger.drain() == [BlockRemoved(tuple(A_LONGER), "disk")]
    assert len(ledger) == 0


def test_a_holder_moving_to_another_medium_reports_both() -> None:
    ledger = BlockLedger(block_size=4)
    ledger.hold("x", A, "disk")
    ledger.drain()
    ledger.hold("x", A, "redis")
    assert ledger.drain() == [BlockStored(tuple(A), None, 4, "redis"), BlockRemoved(tuple(A), "disk")]


def test_events_and_snapshots_agree_per_medium_whatever_happens() -> None:
    rng = random.Random(5)
    chains = [chain([rng.randrange(3) for _ in range(4 * rng.randint(1, 5))]) for _ in range(20)]
    ledger = BlockLedger(block_size=4)
    events = []
    for _ in range(400):
        holder = rng.randrange(8)
        if rng.random() < 0.3:
            ledger.release(holder)
        else:
            ledger.hold(holder, rng.choice(chains), rng.choice(["ram", "disk", "redis"]))
        events += ledger.drain()
        assert replay(events) == replay(ledger.snapshot())
        assert len(ledger) == len(set().union(*replay(events).values()))
