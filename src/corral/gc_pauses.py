"""Keep the garbage collector's long pauses off a server's hot path.

CPython's full (generation 2) collection walks every tracked object, and it runs whenever
ten young collections have passed and the old generation grew by a quarter. In the router
under load (``bench/router_overhead.py --policy kv``, 8,000-character conversations) that
was every 1-2 s, for 15-60 ms each on a 2-core machine: every request that arrived
meanwhile waited as long, which is the router's p99. :class:`QuietCollector` does two
things once the server has started:

* it freezes what start-up built (modules, schemas, vocabularies, chat templates): those
  objects are never scanned again (``gc.freeze``, as vLLM and SGLang do after start-up);
* it runs full collections on a timer (``interval_s``) instead. Young collections run as
  before; what reaches the old generation is mostly cache entries, bounded in bytes by
  their caches, and the rare long-lived cycle, which the timer reclaims. A request must
  leave no cycle behind (the proxy's disconnect watch used to: ~1,500 objects a second
  under load, 88,628 found by the first timed collection; now a few dozen).

What is left is the timed collection's own pause, which grows with the tracked objects of
the caches. The prompt caches therefore keep what the collector need not track (bytes,
tuples of atoms; tuples and dicts of atoms are untracked by the collector itself), one
tracked object per cached piece: ~14 ms a minute once they are full (kv benchmark on
8,000-character conversations, this machine; 34,000 tracked objects, 33 ms with 86,000
before).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

logger = logging.getLogger(__name__)

#: A threshold no count of young collections reaches: full collections only on the timer.
_NEVER = 1_000_000_000


class QuietCollector:
    """Frozen start-up objects and timed full collections, for one server process."""

    def __init__(self, *, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.full_collections = 0
        self._saved: tuple[int, int, int] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        gc.collect()
        gc.freeze()
        self._saved = gc.get_threshold()
        young, middle, _ = self._saved
        gc.set_threshold(young, middle, _NEVER)
        self._loop = loop
        self._handle = loop.call_later(self.interval_s, self._collect)
        logger.debug("froze %d start-up objects; full collections every %.0f s", gc.get_freeze_count(),
                     self.interval_s)

    def _collect(self) -> None:
        started = time.perf_counter()
        found = gc.collect()
        self.full_collections += 1
        logger.debug("full collection: %d unreachable objects in %.1f ms", found,
                     (time.perf_counter() - started) * 1e3)
        assert self._loop is not None
        self._handle = self._loop.call_later(self.interval_s, self._collect)

    def stop(self) -> None:
        """Back to CPython's own schedule (and scan the frozen objects again)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
            gc.unfreeze()
