"""The one thread an engine runs on: it loads the model, then serves its queue.

The model is created on this thread and only used from it, so native calls never
block the event loop and never run concurrently on one context.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class EngineThread:
    """Runs ``load()`` then ``serve()`` on a dedicated daemon thread."""

    def __init__(self, name: str, *, load: Callable[[], None], serve: Callable[[], None]) -> None:
        self._name = name
        self._load = load
        self._serve = serve
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Start the thread and wait until ``load()`` returned (or re-raise what it raised)."""
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(loop, loaded), name=self._name, daemon=True
        )
        self._thread.start()
        await loaded

    async def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end (its queue must be closed first); False on timeout."""
        thread = self._thread
        if thread is None:
            return True
        await asyncio.to_thread(thread.join, timeout_s)
        return not thread.is_alive()

    def _main(self, loop: asyncio.AbstractEventLoop, loaded: asyncio.Future[None]) -> None:
        try:
            self._load()
        except BaseException as exc:
            settle_threadsafe(loop, loaded, error=exc)
            return
        settle_threadsafe(loop, loaded, None)
        self._serve()


def settle_threadsafe(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[T],
    result: T | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    """Set a loop future's result or exception from another thread, unless it is done
    (its waiter was cancelled) or the loop is closed (nobody waits any more)."""

    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)
