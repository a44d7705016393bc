"""The router's side of KV events: follow each worker's blocks into the prefix index.

For every endpoint of a model routed by the ``kv`` policy, one task holds
``GET {endpoint}/v1/kv/events`` open (schema: :mod:`corral.prefix.events`) and applies its
batches to the index: ``BlockStored`` adds, ``BlockRemoved`` removes, ``AllBlocksCleared``
forgets the endpoint's blocks. The stream opens with a snapshot, so any doubt is settled
the same way: drop the endpoint's blocks and reconnect. That happens when the stream
ends or breaks (the worker restarted), when ``seq`` skips or goes back, when a batch is
malformed, or when nothing -- not even a keepalive -- arrived for ``idle_timeout_s``.
Reconnects back off exponentially from ``reconnect_s`` to ``reconnect_max_s`` (reset once
a stream delivered a batch). The set of endpoints is re-read from the pool every
``sync_interval_s``: new ones are followed, removed ones forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable

import orjson

from corral.prefix.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch
from corral.prefix.hashing import token_bytes
from corral.prefix.index import PrefixIndex
from corral.protocol.sse import FrameSplitter
from corral.router.tasks import cancel_all
from corral.router.transport.base import Transport, TransportError

logger = logging.getLogger(__name__)

EVENTS_PATH = "/v1/kv/events"
#: The stream is meant to stay open; a resync once a day is harmless.
_STREAM_TIMEOUT_S = 24 * 3600.0
#: Workers send a keepalive every 15 s; four missed ones mean the connection is dead.
IDLE_TIMEOUT_S = 60.0


class Resync(Exception):
    """The stream can no longer be trusted: drop the endpoint's blocks and reconnect."""


class KVEventSubscriber:
    """One follower task per endpoint; owns them all (stop with :meth:`aclose`)."""

    def __init__(
        self,
        index: PrefixIndex,
        transport: Transport,
        endpoints: Callable[[], Iterable[str]],
        *,
        reconnect_s: float,
        reconnect_max_s: float,
        sync_interval_s: float,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        rng: random.Random | None = None,
    ) -> None:
        self._index = index
        self._transport = transport
        self._endpoints = endpoints
        self._reconnect_s = reconnect_s
        self._reconnect_max_s = max(reconnect_max_s, reconnect_s)
        self._sync_interval_s = sync_interval_s
        self._idle_timeout_s = idle_timeout_s
        self._rng = rng or random.Random()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._syncer: asyncio.Task[None] | None = None
        self.connects: dict[str, int] = {}
        self.batches: dict[str, int] = {}
        self._warned: set[str] = set()

    @property
    def following(self) -> list[str]:
        return list(self._followers)

    def start(self) -> None:
        self.sync()
        self._syncer = asyncio.create_task(self._sync_forever(), name="corral-kv-events-sync")

    def sync(self) -> None:
        """Follow the endpoints there are now; forget those that left."""
        wanted = set(self._endpoints())
        for url in [url for url in self._followers if url not in wanted]:
            self._followers.pop(url).cancel()
            self._index.clear(url)
        for url in wanted:
            if url not in self._followers:
                self._followers[url] = asyncio.create_task(
                    self._follow(url), name=f"corral-kv-events {url}"
                )

    async def aclose(self) -> None:
        syncer, self._syncer = self._syncer, None
        await cancel_all([*self._followers.values(), syncer])
        for url in self._followers:
            self._index.clear(url)
        self._followers.clear()

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval_s)
            self.sync()

    async def _follow(self, url: str) -> None:
        delay = self._reconnect_s
        while True:
            delivered = False
            try:
                delivered = await self._stream(url)
                logger.info("KV events of %s ended; resyncing", url)
            except Resync as exc:
                logger.warning("KV events of %s: %s; resyncing", url, exc)
            except TransportError as exc:
                logger.debug("KV events of %s: %s", url, exc.message)
            except Exception:  # a bug must not end the following for good
                logger.exception("following the KV events of %s failed; resyncing", url)
            finally:
                self._index.clear(url)
            delay = self._reconnect_s if delivered else min(delay * 2, self._reconnect_max_s)
            await asyncio.sleep(delay * (0.5 + self._rng.random()))  # jitter: no herd

    async def _stream(self, url: str) -> bool:
        """Apply one connection's batches until it ends; True if any batch arrived."""
        response = await self._transport.send(
            url,
            EVENTS_PATH,
            b"",
            [("accept", "text/event-stream")],
            method="GET",
            timeout_s=_STREAM_TIMEOUT_S,
        )
        delivered = False
        try:
            if response.status != 200:
                self._unsupported(url, response.status)
                return False
            self.connects[url] = self.connects.get(url, 0) + 1
            splitter = FrameSplitter()
            chunks = aiter(response.chunks())
            seq: int | None = None
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(chunks, b""), self._idle_timeout_s)
                except TimeoutError:
                    raise Resync(f"nothing for {self._idle_timeout_s:.0f} s") from None
                if not chunk:
                    return delivered
                for data in splitter.feed(chunk):
                    seq = self._apply(url, data, seq)
                    delivered = True
        finally:
            await response.aclose()

    def _apply(self, url: str, data: bytes, seq: int | None) -> int:
        try:
            batch = EventBatch.from_dict(orjson.loads(data))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise Resync(f"a malformed batch ({exc})") from None
        if seq is not None and batch.seq != seq + 1:
            raise Resync(f"batch {batch.seq} after {seq}")
        index = self._index
        for event in batch.events:
            if isinstance(event, BlockStored):
                tokens = None if event.token_ids is None else token_bytes(event.token_ids)
                index.store(url, event.block_hashes, event.medium, event.parent_block_hash, tokens)
            elif isinstance(event, BlockRemoved):
                index.remove(url, event.block_hashes, event.medium)
            elif isinstance(event, AllBlocksCleared):
                index.clear(url)
        self.batches[url] = self.batches.get(url, 0) + 1
        return batch.seq

    def _unsupported(self, url: str, status: int) -> None:
        if url not in self._warned:
            self._warned.add(url)
            logger.warning(
                "%s answers %d to %s: it publishes no KV events; the kv policy sees no "
                "blocks there (retrying every %.0f s at most)",
                url,
                status,
                EVENTS_PATH,
                self._reconnect_max_s,
            )
