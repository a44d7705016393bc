"""Overload control per model: at most what the workers can hold is sent on; a bounded
FIFO waits for room; past it, 503 with Retry-After.

A model's capacity is the sum over its healthy endpoints of what one endpoint holds
(a corral worker: one sequence running plus ``queue_size`` waiting). Requests beyond it
wait in the router, first come first served, up to ``queue_size`` of them and at most
``wait_s``; more are refused at once. Memory is bounded by the queue size.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from corral.errors import OverloadedError


class ModelQueue:
    """Admission for one model: ``await enter()`` before sending a request on, ``leave()`` after."""

    def __init__(self, model: str, capacity: Callable[[], int], *, queue_size: int, wait_s: float) -> None:
        self._model = model
        self._capacity = capacity
        self._queue_size = queue_size
        self._wait_s = wait_s
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _has_room(self) -> bool:
        capacity = self._capacity()
        return capacity <= 0 or self._in_flight < capacity  # no healthy endpoint: the proxy says 503

    async def enter(self) -> None:
        """Return once the request may go on; OverloadedError (503) if it may not."""
        if not self._waiters and self._has_room():
            self._in_flight += 1
            return
        if len(self._waiters) >= self._queue_size:
            raise OverloadedError(
                f"model '{self._model}' is at capacity and {self._queue_size} requests are already waiting",
                retry_after_s=1,
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._wait_s):
                await waiter  # a slot handed over is already counted
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():  # handed a slot it will not use
                self._in_flight -= 1
                self._hand_over()
            if isinstance(exc, TimeoutError):
                raise OverloadedError(
                    f"model '{self._model}' stayed at capacity for {self._wait_s:g} s", retry_after_s=1
                ) from None
            raise

    def leave(self) -> None:
        self._in_flight -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self._has_room():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)
