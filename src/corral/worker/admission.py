"""Admission: a bounded FIFO between the event loop and an engine's one thread.

The loop puts requests without ever blocking: when ``capacity`` requests are already
waiting, :meth:`BoundedFifo.put` raises OverloadedError (503 with Retry-After) so a
router can send the request elsewhere instead of letting it queue without bound.
The engine's thread takes them in arrival order; the request being run does not
count against the capacity. A waiting request whose client went away is removed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from corral.errors import OverloadedError

T = TypeVar("T")


class BoundedFifo(Generic[T]):
    """Thread-safe FIFO of at most ``capacity`` waiting items; ``put`` never blocks."""

    def __init__(self, capacity: int, *, retry_after_s: int = 1) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._retry_after_s = retry_after_s
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        """Append ``item``, or raise OverloadedError if the queue is full or closed."""
        with self._cond:
            if self._closed:
                raise OverloadedError(
                    "the worker is shutting down", retry_after_s=self._retry_after_s
                )
            if len(self._items) >= self._capacity:
                raise OverloadedError(
                    f"the worker's queue is full ({self._capacity} requests waiting); retry later",
                    retry_after_s=self._retry_after_s,
                )
            self._items.append(item)
            self._cond.notify()

    def get(self) -> T | None:
        """Block until an item is waiting and take it; ``None`` once the queue is closed."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            return None if self._closed else self._items.popleft()

    def get_many(self, limit: int, weight: Callable[[T], int]) -> list[T]:
        """Block for one item, then also take the items behind it while their total
        ``weight`` stays within ``limit`` (micro-batching). Empty once closed."""
        first = self.get()
        if first is None:
            return []
        taken, total = [first], weight(first)
        with self._cond:
            while self._items and not self._closed and total + weight(self._items[0]) <= limit:
                item = self._items.popleft()
                taken.append(item)
                total += weight(item)
        return taken

    def remove(self, item: T) -> bool:
        """Drop a waiting item (its client left); False if it was already taken."""
        with self._cond:
            try:
                self._items.remove(item)
            except ValueError:
                return False
            return True

    def close(self) -> list[T]:
        """Refuse new items, wake the taker, and hand back the items still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left
