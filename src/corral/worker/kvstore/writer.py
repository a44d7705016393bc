"""One background thread that runs writes to the lower tiers, so generation does not wait.

Contract:

- :meth:`BackgroundWriter.submit` never blocks: it queues the write, or returns False when
  ``capacity`` writes are already waiting (the caller counts the drop; the state is simply
  not kept in the lower tiers). Each queued write holds a state of tens of MB, so the
  queue is small on purpose.
- Writes run one at a time, in order. A write that raises is logged with its traceback
  and the thread goes on (tiers count and log their own faults; this is for bugs).
- :meth:`flush` waits until everything queued so far has run; :meth:`close` runs what is
  queued, then stops the thread (both with a timeout).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Writes that may wait (each holds one state in memory).
QUEUE_CAPACITY = 4


class BackgroundWriter:
    def __init__(self, *, name: str, capacity: int = QUEUE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._running = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Writes queued or running."""
        with self._cond:
            return len(self._queue) + self._running

    def submit(self, write: Callable[[], None]) -> bool:
        """Queue ``write``; False (and nothing queued) if the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._queue) >= self.capacity:
                return False
            self._queue.append(write)
            self._cond.notify_all()
            return True

    def flush(self, timeout_s: float) -> bool:
        """Wait until every write queued so far has run; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout_s: float) -> bool:
        """Run what is queued, then stop; False if the thread did not stop in time."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                write = self._queue.popleft()
                self._running = 1
            try:
                write()
            except Exception:
                logger.exception("a write to the KV tiers failed")
            finally:
                with self._cond:
                    self._running = 0
                    self._cond.notify_all()
