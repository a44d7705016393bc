"""QuietCollector: start-up objects frozen, full collections on its timer only, undone on stop."""

from __future__ import annotations

import asyncio
import gc
import weakref

from corral.gc_pauses import QuietCollector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_full_collections_run_on_the_timer_and_stop_restores_the_defaults() -> None:
    before = gc.get_threshold()
    collector = QuietCollector(interval_s=0.05)
    collector.start(asyncio.get_running_loop())
    try:
        assert gc.get_freeze_count() > 0
        young, middle, old = gc.get_threshold()
        assert (young, middle) == before[:2] and old > 10**6  # no full collection by count
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector can reclaim it
        gone = asyncio.Event()
        weakref.finalize(a, gone.set)
        gc.collect(1)  # still referenced: it moves to the old generation
        del a, b
        gc.collect(1)  # a young collection no longer sees it
        assert not gone.is_set()
        await asyncio.wait_for(gone.wait(), timeout=5)  # the timed full collection does
        assert collector.full_collections >= 1
    finally:
        collector.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
