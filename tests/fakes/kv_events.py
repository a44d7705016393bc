"""A fake worker's KV events: ``GET /v1/kv/events`` with scripted blocks.

    kv = FakeKVEvents()
    engine = FakeEngine("w1", kv=kv)
    kv.store([h1, h2])        # a live batch: BlockStored
    kv.remove([h2])           # BlockRemoved
    kv.clear()                # AllBlocksCleared
    kv.disconnect()           # every open stream ends (the router must resync)
    kv.skip()                 # the next batch number is skipped (a gap)
    kv.status = 404           # new subscriptions are refused (a worker without events)

Every stream opens with a snapshot, as a real worker's does (``corral.prefix.events``):
one batch of ``AllBlocksCleared`` and ``BlockStored`` for every held block, numbered with
the last batch it reflects. With a ``hasher`` (request body -> its block hashes) the fake
also behaves like a caching worker: each request reports the blocks it already held as
``usage.prompt_tokens_details.cached_tokens`` and then holds all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import orjson

from corral.prefix.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, KVEvent

Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]
_END = None


class FakeKVEvents:
    def __init__(
        self,
        *,
        block_size: int = 16,
        hasher: Callable[[dict[str, Any]], Sequence[int]] | None = None,
        clock: Callable[[], float] = time.time,
        keepalive_s: float | None = None,
    ) -> None:
        self.block_size = block_size
        self.keepalive_s = keepalive_s
        self.hasher = hasher
        self.held: dict[int, None] = {}
        #: Chains held from the start, each announced with its tokens: (hashes, tokens).
        self.chains: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.seq = 0
        self.status = 200
        self.subscriptions = 0
        self._clock = clock
        self._streams: set[asyncio.Queue[bytes | None]] = set()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- scripting ------------------------------------------------------------------

    def store(self, hashes: Sequence[int], parent: int | None = None) -> None:
        fresh = [block for block in hashes if block not in self.held]
        self.held.update(dict.fromkeys(fresh))
        if fresh:
            self.publish([BlockStored(tuple(fresh), parent, self.block_size)])

    def remove(self, hashes: Sequence[int]) -> None:
        gone = [block for block in hashes if block in self.held]
        for block in gone:
            del self.held[block]
        if gone:
            self.publish([BlockRemoved(tuple(gone))])

    def clear(self) -> None:
        self.held.clear()
        self.publish([AllBlocksCleared()])

    def skip(self) -> None:
        self.seq += 1

    def publish(self, events: list[KVEvent]) -> None:
        self.seq += 1
        frame = _frame(EventBatch(self.seq, self._clock(), tuple(events)))
        for queue in self._streams:
            queue.put_nowait(frame)

    def disconnect(self) -> None:
        for queue in self._streams:
            queue.put_nowait(_END)

    async def wait_for_streams(self, count: int = 1, timeout_s: float = 5.0) -> None:
        """Until ``count`` subscribers are connected."""
        for _ in range(int(timeout_s / 0.002)):
            if len(self._streams) >= count:
                return
            await asyncio.sleep(0.002)
        raise TimeoutError(f"{len(self._streams)} of {count} KV event subscribers connected")

    # -- as a caching worker ---------------------------------------------------------

    def learn(self, request: dict[str, Any]) -> int | None:
        """Cached tokens for ``request`` (the leading blocks held), then hold them all."""
        if self.hasher is None:
            return None
        hashes = list(self.hasher(request))
        matched = 0
        while matched < len(hashes) and hashes[matched] in self.held:
            matched += 1
        self.store(hashes[matched:], hashes[matched - 1] if matched else None)
        return matched * self.block_size

    # -- the endpoint ------------------------------------------------------------------

    async def serve(self, receive: Receive, send: Send) -> None:
        if self.status != 200:
            body = orjson.dumps({"error": {"message": "no KV events here", "code": self.status}})
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self.subscriptions += 1
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        queue.put_nowait(_frame(self.snapshot()))
        self._streams.add(queue)
        watcher = asyncio.ensure_future(_until_disconnect(receive, queue))
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            while (frame := await self._next(queue)) is not _END:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._streams.discard(queue)
            watcher.cancel()

    async def _next(self, queue: asyncio.Queue[bytes | None]) -> bytes | None:
        if self.keepalive_s is None:
            return await queue.get()
        try:
            return await asyncio.wait_for(queue.get(), self.keepalive_s)
        except TimeoutError:
            return b": keepalive\n\n"

    def snapshot(self) -> EventBatch:
        events: list[KVEvent] = [AllBlocksCleared()]
        events += [BlockStored(hashes, None, self.block_size, token_ids=tokens) for hashes, tokens in self.chains]
        if self.held:
            events.append(BlockStored(tuple(self.held), None, self.block_size))
        return EventBatch(self.seq, self._clock(), tuple(events))


async def _until_disconnect(receive: Receive, queue: asyncio.Queue[bytes | None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    queue.put_nowait(_END)


def _frame(batch: EventBatch) -> bytes:
    return b"data: " + orjson.dumps(batch.to_dict()) + b"\n\n"
