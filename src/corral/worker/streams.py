"""A one-way channel from an engine thread to the event loop, for one generation.

The producer (the engine's thread, or a task on the loop) calls :meth:`TokenStream.push`
for each piece of text and ends with :meth:`~TokenStream.finish` or
:meth:`~TokenStream.fail`. The consumer iterates it on the loop. Pieces that arrive
while the consumer is busy are joined, so a slow client costs fewer, larger frames
rather than a backlog. :meth:`~TokenStream.cancel` raises a flag the producer checks
once per token and ends the iteration at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Literal, NamedTuple

FinishReason = Literal["stop", "length"]


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class _End(NamedTuple):
    reason: FinishReason | None
    completion_tokens: int
    cached_tokens: int


_Item = str | _End | BaseException


class TokenStream:
    """Text of one generation, produced on any thread and consumed on the event loop."""

    def __init__(
        self, prompt_tokens: int, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._items: deque[_Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._on_cancel: Callable[[], None] | None = None
        #: Read by the producer before each token; set only by :meth:`cancel`.
        self.cancelled = False
        self.finish_reason: FinishReason | None = None
        self.usage = Usage(prompt_tokens, 0)

    # -- producer side: safe from any thread ---------------------------------------

    def push(self, text: str) -> None:
        self._send(text)

    def finish(
        self, reason: FinishReason | None, completion_tokens: int, cached_tokens: int = 0
    ) -> None:
        self._send(_End(reason, completion_tokens, cached_tokens))

    def fail(self, error: BaseException) -> None:
        self._send(error)

    def _send(self, item: _Item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled = True

    # -- consumer side: on the loop ------------------------------------------------

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (on the loop) when the stream is cancelled before it ends."""
        self._on_cancel = callback

    def cancel(self) -> None:
        """Stop generation at the next token; iteration ends now. No-op once ended."""
        if self._ended or self.cancelled:
            return
        self.cancelled = True
        if self._on_cancel is not None:
            self._on_cancel()
        self._deliver(_End(None, self.usage.completion_tokens, 0))

    def _deliver(self, item: _Item) -> None:
        if self._ended:
            return
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> str:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if isinstance(self._items[0], str):
            return self._take_text()
        return self._end(self._items.popleft())

    def _take_text(self) -> str:
        parts: list[str] = []
        while self._items and isinstance(self._items[0], str):
            parts.append(self._items.popleft())  # type: ignore[arg-type]
        return parts[0] if len(parts) == 1 else "".join(parts)

    def _end(self, item: _Item) -> str:
        if self._ended:
            raise StopAsyncIteration
        self._ended = True
        self._items.clear()
        if isinstance(item, BaseException):
            raise item
        if not isinstance(item, _End):  # pragma: no cover - text is taken by _take_text
            raise TypeError(f"unexpected stream item {type(item).__name__}")
        self.finish_reason = item.reason
        self.usage = Usage(self.usage.prompt_tokens, item.completion_tokens, item.cached_tokens)
        raise StopAsyncIteration

    @property
    def ended(self) -> bool:
        return self._ended
