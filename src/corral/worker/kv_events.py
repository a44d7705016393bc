"""The worker's KV events: counted blocks, a bounded log of batches, and its SSE subscribers.

The schema is :mod:`corral.prefix.events`. Three pieces, one per thread of concern:

- :class:`BlockLedger` counts, per block hash and medium, the *holders* that hold it (the
  live llama.cpp context and each RAM prefix-store entry in ``"ram"``, each disk file in
  ``"disk"``, each Redis blob this worker wrote in ``"redis"``). A holder holds one chain
  of leading blocks of a prompt, in one medium. A block going from 0 to 1 holders in a
  medium is a ``BlockStored`` of that medium, from 1 to 0 a ``BlockRemoved`` of that medium,
  so a block shared by two chains is removed only when both let go, and a block dropped
  from RAM but still on disk stays known as a disk block.
- :class:`KVEventLog` wraps the ledger for the engine thread: each ``recording()`` turns
  what changed into one numbered batch, appended under a lock to a bounded log. It never
  waits on a subscriber; it only schedules a wake-up on the event loop.
- :class:`KVEventFeed` serves subscribers on the event loop: a snapshot first, then the
  log's batches from that point. Subscribers read the one shared log at their own pace;
  one that falls so far behind that the log dropped its next batch is disconnected (its
  reconnect brings a fresh snapshot), so nothing buffers per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from array import array
from collections import deque
from collections.abc import AsyncGenerator, Callable, Hashable, Iterator, Sequence

from corral.prefix.events import (
    MEDIUM_RAM,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KVEvent,
)
from corral.protocol import sse

#: Batches the log keeps for subscribers that are behind.
LOG_BATCHES = 1024
#: An SSE comment sent after this long without a batch, so that dead connections show.
KEEPALIVE_S = 15.0
_KEEPALIVE = b": keepalive\n\n"


class BlockLedger:
    """(Medium, block hash) -> how many holders hold it; changes become events (not thread-safe)."""

    def __init__(self, *, block_size: int, medium: str = MEDIUM_RAM) -> None:
        self.block_size = block_size
        #: The medium of holders that do not name one.
        self.medium = medium
        # holder -> (medium, chain, the chain's tokens or None)
        self._chains: dict[Hashable, tuple[str, tuple[int, ...], array[int] | None]] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._blocks: dict[int, int] = {}  # block hash -> media holding it
        self._pending: list[KVEvent] = []

    def __len__(self) -> int:
        """Distinct blocks held, in any medium."""
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def holds(self, block_hash: int, medium: str) -> bool:
        return (medium, block_hash) in self._counts

    def hold(
        self,
        holder: Hashable,
        hashes: Sequence[int],
        medium: str | None = None,
        tokens: Sequence[int] | None = None,
    ) -> None:
        """``holder`` now holds exactly the chain ``hashes`` in ``medium`` (the ledger's
        default when None), and no longer its previous chain. ``tokens``: the prompt the
        chain was hashed from (its blocks' tokens go out with the events), where known."""
        medium = self.medium if medium is None else medium
        new = tuple(hashes)
        old_medium, old, _ = self._chains.pop(holder, (medium, (), None))
        held = None
        if tokens is not None and len(tokens) >= len(new) * self.block_size:
            held = array("i", tokens[: len(new) * self.block_size])
        if new:
            self._chains[holder] = (medium, new, held)
        self._stored(medium, new, [h for h in new if self._add(medium, h, 1) == 1], held)
        self._removed(old_medium, [h for h in old if self._add(old_medium, h, -1) == 0])

    def release(self, holder: Hashable) -> None:
        self.hold(holder, ())

    def drain(self) -> list[KVEvent]:
        """The events since the last drain, in order."""
        events, self._pending = self._pending, []
        return events

    def snapshot(self) -> list[KVEvent]:
        """``AllBlocksCleared``, then every held block per medium, parents first."""
        events: list[KVEvent] = [AllBlocksCleared()]
        seen: set[tuple[str, int]] = set()
        for medium, chain, tokens in self._chains.values():
            fresh = [h for h in chain if (medium, h) not in seen]
            seen.update((medium, h) for h in fresh)
            self._append_stored(events, medium, chain, fresh, tokens)
        return events

    def _add(self, medium: str, block_hash: int, delta: int) -> int:
        key = (medium, block_hash)
        count = self._counts.get(key, 0) + delta
        if count:
            self._counts[key] = count
        else:
            del self._counts[key]
        if count == 0 or (count == 1 and delta == 1):  # the medium starts or stops holding it
            media = self._blocks.get(block_hash, 0) + (1 if count else -1)
            if media:
                self._blocks[block_hash] = media
            else:
                del self._blocks[block_hash]
        return count

    def _stored(
        self, medium: str, chain: tuple[int, ...], fresh: list[int], tokens: array[int] | None
    ) -> None:
        self._append_stored(self._pending, medium, chain, fresh, tokens)

    def _append_stored(
        self,
        out: list[KVEvent],
        medium: str,
        chain: tuple[int, ...],
        fresh: list[int],
        tokens: array[int] | None,
    ) -> None:
        if not fresh:
            return
        # Holding a block means holding its ancestors, so the fresh blocks end the chain.
        start = len(chain) - len(fresh)
        parent = chain[start - 1] if start > 0 else None
        ids = None if tokens is None else tuple(tokens[start * self.block_size :])
        out.append(BlockStored(tuple(fresh), parent, self.block_size, medium, ids))

    def _removed(self, medium: str, gone: list[int]) -> None:
        if gone:
            self._pending.append(BlockRemoved(tuple(gone), medium))


class KVEventLog:
    """A ledger whose changes become numbered batches in a bounded log (thread-safe)."""

    def __init__(
        self,
        *,
        block_size: int,
        medium: str = MEDIUM_RAM,
        capacity: int = LOG_BATCHES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = BlockLedger(block_size=block_size, medium=medium)
        self._batches: deque[EventBatch] = deque(maxlen=capacity)
        self._seq = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def seq(self) -> int:
        """The number of the last batch (0 before the first)."""
        return self._seq

    @contextlib.contextmanager
    def recording(self) -> Iterator[BlockLedger]:
        """Change the ledger; what changed becomes one batch (even if the block raises)."""
        listeners: list[Callable[[], None]] = []
        try:
            with self._lock:
                try:
                    yield self._ledger
                finally:
                    events = self._ledger.drain()
                    if events:
                        self._seq += 1
                        self._batches.append(EventBatch(self._seq, self._clock(), tuple(events)))
                        listeners = list(self._listeners)
        finally:
            for listener in listeners:
                listener()

    def snapshot(self) -> EventBatch:
        """Every held block, as the batch a new subscriber starts from."""
        with self._lock:
            return EventBatch(self._seq, self._clock(), tuple(self._ledger.snapshot()))

    def since(self, seq: int) -> list[EventBatch] | None:
        """The batches after ``seq``; None when the log no longer has all of them."""
        with self._lock:
            if seq >= self._seq:
                return []
            first = self._batches[0].seq if self._batches else self._seq + 1
            if seq + 1 < first:
                return None
            return list(itertools.islice(self._batches, seq + 1 - first, None))

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the recording thread) after each batch; returns its remover."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove


class KVEventFeed:
    """SSE subscribers of one log, on the event loop: each wake-up from the log is fanned
    out to every subscriber, which then reads what it has not sent yet from the log."""

    def __init__(self, log: KVEventLog, *, keepalive_s: float = KEEPALIVE_S) -> None:
        self.log = log
        self.keepalive_s = keepalive_s
        self._subscribers: set[KVSubscription] = set()
        self._detach: Callable[[], None] | None = None
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self) -> KVSubscription:
        """A new subscriber (call on the loop); its frames start with a snapshot."""
        if self._detach is None:
            self._detach = self.log.add_listener(_waker(asyncio.get_running_loop(), self._wake))
        return KVSubscription(self)

    def close(self) -> None:
        """End every stream (the server is shutting down) and stop listening to the log."""
        self._closed = True
        self._wake()
        if self._detach is not None:
            self._detach()
            self._detach = None

    def _wake(self) -> None:
        for subscriber in self._subscribers:
            subscriber.wake()


class KVSubscription:
    """One subscriber's stream: a snapshot, then the batches after it, until it ends."""

    def __init__(self, feed: KVEventFeed) -> None:
        self._feed = feed
        self._wakeup = asyncio.Event()
        self._closed = False

    def wake(self) -> None:
        self._wakeup.set()

    def close(self) -> None:
        """The client left: end the stream now (idempotent)."""
        self._closed = True
        self._wakeup.set()

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """SSE frames; the stream ends when closed, or when it fell behind the log."""
        feed, log = self._feed, self._feed.log
        feed._subscribers.add(self)
        try:
            batch = log.snapshot()
            yield sse.encode(batch.to_dict())
            cursor = batch.seq
            while not (self._closed or feed.closed):
                self._wakeup.clear()
                batches = log.since(cursor)
                if batches is None:
                    return  # too slow: the log dropped batches it had not sent
                for batch in batches:
                    yield sse.encode(batch.to_dict())
                    cursor = batch.seq
                if batches:
                    continue
                try:
                    await asyncio.wait_for(self._wakeup.wait(), feed.keepalive_s)
                except TimeoutError:
                    yield _KEEPALIVE
        finally:
            feed._subscribers.discard(self)


def _waker(loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> Callable[[], None]:
    """``wake`` scheduled on ``loop``, callable from any thread."""

    def wake_from_any_thread() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(wake)

    return wake_from_any_thread
