"""The router's side of vLLM's KV events: follow each vLLM replica's blocks into the index.

vLLM (``--kv-events-config``, :mod:`corral.engines.vllm`) publishes on a ZMQ PUB socket
(port ``vllm.kv_events_port``, 5557) three-frame messages ``(topic, seq, payload)``:
``seq`` an 8-byte big-endian batch number counting from 0 per vLLM process, ``payload``
a msgpack ``EventBatch`` ``[ts, events, data_parallel_rank]``. Events are tagged maps
(``{"type": "BlockStored", "block_hashes": ..., ...}``, vLLM >= #42892) or, from older
vLLMs, tagged arrays (``["BlockStored", block_hashes, parent_block_hash, token_ids,
block_size, lora_id, medium, lora_name, extra_keys, group_idx, kv_cache_spec_kind]``);
both are read. A ROUTER socket (``vllm.kv_events_replay_port``, 5558) answers a request
``(b"", start_seq)`` with every batch it still buffers from ``start_seq`` on, each as
``(b"", seq, payload)``, then ``(b"", -1, b"")`` (vLLM ``vllm/distributed/kv_events.py``,
``ZmqEventPublisher``).

**Hashes.** vLLM's block hashes are not corral's (SHA-256 over pickled tuples, with a
per-process seed unless ``PYTHONHASHSEED`` is set), but ``BlockStored`` carries each
block's ``token_ids``: every stored block is re-hashed into corral's chain
(:func:`corral.prefix.hashing.chain_blocks` over :func:`~corral.prefix.hashing.token_bytes`,
seeded with the model name, ``prefix.block_size`` tokens a block), continuing from the
corral hash of its ``parent_block_hash`` -- exactly what the router computes for a
prompt. A vLLM block of ``k * prefix.block_size`` tokens becomes ``k`` corral blocks
(`corral deploy` makes ``k`` 1 with ``--block-size``; other sizes are skipped).
``BlockRemoved`` names only vLLM hashes, so each follower keeps a bounded LRU map
``vLLM hash -> its corral hashes and media`` (``max_blocks`` per endpoint); a block
evicted from that map leaves the index too (the router never claims a block it could
no longer un-claim). Blocks whose hash carries more than tokens (a LoRA adapter, or
``extra_keys``: multimodal inputs, a ``cache_salt``), blocks of non-full-attention KV
groups (hybrid models), and blocks whose parent is unknown are skipped and counted:
no prompt the router hashes could match them.

**Media.** ``GPU`` (and none, from vLLMs before media) and ``CPU`` (vLLM's own KV
offloading) are both corral's ``ram``: servable without a prefill. A block stays ``ram``
in the index while either holds it. Other media are skipped. (LMCache's tiers publish no
events through vLLM: the router does not see them.)

**Resync.** There is no snapshot: a follower starts by asking the replay socket for
everything from batch 0 (whatever vLLM still buffers; a suffix of the history is safe to
apply: it can only under-claim). Then, per batch: the next ``seq`` is applied; a gap is
filled from the replay socket if it still has the missing batches, otherwise the
endpoint's blocks are dropped and whatever the replay gave is applied from there; a
``seq`` at or below the last one is a duplicate when its ``ts`` is not newer (a replayed
batch seen again) and a restarted vLLM otherwise (its cache is empty: drop the
endpoint's blocks, then apply). A batch that cannot be decoded drops the endpoint's
blocks too. ZMQ reconnects a SUB socket by itself when vLLM comes back on the same
address. vLLM's data-parallel ranks (one publisher per rank, port + rank) are not
followed: one publisher per endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import msgpack
import zmq
import zmq.asyncio

from corral.config import ModelConfig, VllmConfig
from corral.prefix.events import MEDIUM_RAM
from corral.prefix.hashing import chain_blocks, root_hash, token_bytes
from corral.prefix.index import PrefixIndex
from corral.router.tasks import cancel_all

logger = logging.getLogger(__name__)

#: The topic `corral deploy` gives vLLM's publisher (``corral.engines.vllm.KV_EVENTS_TOPIC``).
DEFAULT_TOPIC = "kv-events"
#: vLLM's media -> corral's.
MEDIA: dict[str, str] = {"GPU": MEDIUM_RAM, "CPU": MEDIUM_RAM}
_MEDIUM_BITS = {name: 1 << position for position, name in enumerate(MEDIA)}
#: KV cache groups whose blocks a prompt's full-attention prefix can match.
_FULL_ATTENTION = (None, "full_attention", "mla_attention", "sink_full_attention")
_END_SEQ = -1
#: Replayed batches taken at most per request (vLLM buffers 10,000 by default).
_MAX_REPLAY = 100_000

VllmHash = int | bytes


class Malformed(ValueError):
    """A batch or event that does not have vLLM's shape."""


# -- decoding -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    block_hashes: tuple[VllmHash, ...]
    parent: VllmHash | None
    token_ids: tuple[int, ...]
    block_size: int
    medium: str | None = None
    lora: bool = False
    extra_keys: tuple[Any, ...] | None = None
    group: int | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Removed:
    block_hashes: tuple[VllmHash, ...]
    medium: str | None = None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class Cleared:
    pass


VllmEvent = Stored | Removed | Cleared


class Batch(NamedTuple):
    ts: float
    events: tuple[VllmEvent, ...]


_STORED_FIELDS = (
    "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
    "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind",
)  # fmt: skip
_REMOVED_FIELDS = ("block_hashes", "medium", "group_idx")


def decode_batch(payload: bytes) -> Batch:
    """One msgpack ``EventBatch`` (array or map; events as tagged maps or arrays)."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise Malformed(f"not msgpack ({exc})") from None
    if isinstance(data, dict):
        ts, events = data.get("ts"), data.get("events")
    elif isinstance(data, list) and len(data) >= 2:
        ts, events = data[0], data[1]
    else:
        raise Malformed("an EventBatch is [ts, events, ...]")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(events, list):
        raise Malformed("an EventBatch needs a numeric ts and a list of events")
    return Batch(float(ts), tuple(_event(item) for item in events))


def _event(item: Any) -> VllmEvent:
    if isinstance(item, dict):
        kind, fields = item.get("type"), item
    elif isinstance(item, list) and item:
        kind = item[0]
        names = _STORED_FIELDS if kind == "BlockStored" else _REMOVED_FIELDS
        fields = dict(zip(names, item[1:], strict=False))
    else:
        raise Malformed(f"an event is a tagged map or array, not {type(item).__name__}")
    if kind == "BlockStored":
        hashes = _hashes(fields.get("block_hashes"))
        tokens = fields.get("token_ids")
        size = fields.get("block_size")
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
            raise Malformed("BlockStored.token_ids must be a list of integers")
        if type(size) is not int or size < 1 or len(tokens) != size * len(hashes):
            raise Malformed("BlockStored needs block_size tokens for each block hash")
        parent = fields.get("parent_block_hash")
        extra = fields.get("extra_keys")
        return Stored(
            hashes,
            None if parent is None else _hash(parent),
            tuple(tokens),
            size,
            _text(fields.get("medium")),
            fields.get("lora_name") is not None or fields.get("lora_id") is not None,
            tuple(extra) if isinstance(extra, list) else None,
            _group(fields.get("group_idx")),
            _text(fields.get("kv_cache_spec_kind")),
        )
    if kind == "BlockRemoved":
        return Removed(
            _hashes(fields.get("block_hashes")),
            _text(fields.get("medium")),
            _group(fields.get("group_idx")),
        )
    if kind == "AllBlocksCleared":
        return Cleared()
    raise Malformed(f"unknown event type {kind!r}")


def _hash(value: Any) -> VllmHash:
    if type(value) is int or isinstance(value, bytes):
        return value
    raise Malformed(f"a block hash is an integer or bytes, not {type(value).__name__}")


def _hashes(value: Any) -> tuple[VllmHash, ...]:
    if not isinstance(value, list):
        raise Malformed("block_hashes must be a list")
    return tuple(_hash(item) for item in value)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise Malformed(f"expected a string, not {type(value).__name__}")


def _group(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    raise Malformed(f"group_idx must be an integer, not {type(value).__name__}")


# -- translation into the index -------------------------------------------------------


@dataclass(slots=True)
class _Tracked:
    hashes: tuple[int, ...]
    media: int = 0  # bits of vLLM's media (_MEDIUM_BITS) holding the block

    def held_in(self, medium: str) -> bool:
        """Whether some vLLM medium that is corral's ``medium`` still holds the block."""
        return any(self.media & bit and MEDIA[name] == medium for name, bit in _MEDIUM_BITS.items())


@dataclass(slots=True)
class FollowerStats:
    """What one endpoint's follower did (for tests and logs)."""

    batches: int = 0
    replayed: int = 0
    duplicates: int = 0
    resets: int = 0
    skipped_blocks: int = 0


class BlockTranslator:
    """One endpoint's vLLM blocks as corral blocks in ``index`` (event-loop only)."""

    def __init__(
        self, index: PrefixIndex, url: str, *, model: str, block_size: int, max_blocks: int
    ) -> None:
        self._index = index
        self.url = url
        self._root = root_hash(model)
        self._block_size = block_size
        self._max_blocks = max_blocks
        self._blocks: OrderedDict[VllmHash, _Tracked] = OrderedDict()
        self._ignored_groups: set[int] = set()
        self.stats = FollowerStats()
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self._blocks)

    def reset(self) -> None:
        """Forget every block of the endpoint (here and in the index)."""
        self._blocks.clear()
        self._index.clear(self.url)

    def apply(self, batch: Batch) -> None:
        for event in batch.events:
            if isinstance(event, Stored):
                self._stored(event)
            elif isinstance(event, Removed):
                self._removed(event)
            else:
                self.reset()
        self.stats.batches += 1

    def _stored(self, event: Stored) -> None:
        parent = self._parent(event)
        vllm_medium = event.medium or "GPU"
        medium = self._medium(vllm_medium)
        if parent is None or medium is None:
            self.stats.skipped_blocks += len(event.block_hashes)
            return
        raw = token_bytes(event.token_ids)
        width = event.block_size * 4
        stored: list[int] = []
        for position, block in enumerate(event.block_hashes):
            extra = event.extra_keys
            if extra is not None and position < len(extra) and extra[position]:
                self.stats.skipped_blocks += len(event.block_hashes) - position
                break  # its hash (and every child's) covers more than tokens
            span = raw[position * width : (position + 1) * width]
            hashes = chain_blocks(stored[-1] if stored else parent, span, self._block_size)
            self._track(block, hashes, vllm_medium)
            stored.extend(hashes)
        if stored:
            self._index.store(
                self.url,
                stored,
                medium,
                None if event.parent is None else parent,
                raw[: len(stored) * self._block_size * 4],
            )

    def _parent(self, event: Stored) -> int | None:
        """The corral hash the event's first block chains on; None: the event is skipped."""
        if event.kind not in _FULL_ATTENTION:
            if event.group is not None:
                self._ignored_groups.add(event.group)
            return None
        if event.lora:
            return None
        if event.block_size % self._block_size:
            self._warn_once(
                "size",
                f"vLLM blocks of {event.block_size} tokens are not whole router blocks of "
                f"{self._block_size} (prefix.block_size); they are skipped",
            )
            return None
        if event.parent is None:
            return self._root
        known = self._blocks.get(event.parent)
        return None if known is None else known.hashes[-1]

    def _removed(self, event: Removed) -> None:
        vllm_medium = event.medium or "GPU"
        medium = self._medium(vllm_medium)
        if medium is None or (event.group is not None and event.group in self._ignored_groups):
            return
        for block in event.block_hashes:
            tracked = self._blocks.get(block)
            if tracked is None:
                continue
            tracked.media &= ~_MEDIUM_BITS[vllm_medium]
            if not tracked.held_in(medium):
                self._index.remove(self.url, tracked.hashes, medium)
            if not tracked.media:
                del self._blocks[block]

    def _track(self, block: VllmHash, hashes: list[int], vllm_medium: str) -> None:
        tracked = self._blocks.get(block)
        if tracked is None:
            tracked = self._blocks[block] = _Tracked(tuple(hashes))
        else:
            self._blocks.move_to_end(block)
        tracked.media |= _MEDIUM_BITS[vllm_medium]
        while len(self._blocks) > self._max_blocks:
            _, oldest = self._blocks.popitem(last=False)
            for medium in set(MEDIA.values()):
                if oldest.held_in(medium):
                    self._index.remove(self.url, oldest.hashes, medium)

    def _medium(self, medium: str) -> str | None:
        mapped = MEDIA.get(medium)
        if mapped is None:
            self._warn_once(f"medium {medium}", f"blocks in medium {medium!r} are skipped")
        return mapped

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("KV events of %s: %s", self.url, message)


# -- following the sockets ------------------------------------------------------------


class VllmTarget(NamedTuple):
    """A vLLM endpoint and where its KV events are published."""

    url: str
    model: str
    events: str
    replay: str | None


def vllm_target(url: str, model: ModelConfig) -> VllmTarget:
    """The ZMQ addresses of the vLLM replica at ``url`` (its host, the model's ports)."""
    config = model.vllm or VllmConfig()
    host = urlsplit(url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    replay = (
        None
        if config.kv_events_replay_port is None
        else f"tcp://{host}:{config.kv_events_replay_port}"
    )
    return VllmTarget(url, model.name, f"tcp://{host}:{config.kv_events_port}", replay)


class VllmKVEventSubscriber:
    """One follower task per vLLM endpoint; owns them and their sockets (:meth:`aclose`).

    ``targets`` is re-read every ``sync_interval_s``; ``max_blocks`` bounds the vLLM blocks
    remembered per endpoint (a few hundred bytes each); a replay request waits
    ``replay_timeout_s`` for an answer; a broken subscription is retried after ``retry_s``.
    """

    def __init__(
        self,
        index: PrefixIndex,
        targets: Callable[[], Iterable[VllmTarget]],
        *,
        block_size: int,
        sync_interval_s: float,
        max_blocks: int = 131_072,
        topic: str = DEFAULT_TOPIC,
        replay_timeout_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        self._index = index
        self._targets = targets
        self._block_size = block_size
        self._sync_interval_s = sync_interval_s
        self._max_blocks = max_blocks
        self._topic = topic.encode()
        self._replay_timeout_ms = max(1, round(replay_timeout_s * 1000))
        self._retry_s = retry_s
        self._context: zmq.asyncio.Context | None = None
        self._followers: dict[str, tuple[VllmTarget, asyncio.Task[None]]] = {}
        self._syncer: asyncio.Task[None] | None = None
        self.translators: dict[str, BlockTranslator] = {}

    @property
    def following(self) -> list[str]:
        return list(self._followers)

    def start(self) -> None:
        self._context = zmq.asyncio.Context()
        self.sync()
        self._syncer = asyncio.create_task(self._sync_forever(), name="corral-vllm-kv-events-sync")

    def sync(self) -> None:
        """Follow the vLLM endpoints there are now; forget those that left."""
        wanted = {target.url: target for target in self._targets()}
        for url, (target, task) in list(self._followers.items()):
            if wanted.get(url) != target:
                task.cancel()
                del self._followers[url]
                self.translators.pop(url, None)
                self._index.clear(url)
        for url, target in wanted.items():
            if url not in self._followers:
                task = asyncio.create_task(
                    self._follow(target), name=f"corral-vllm-kv-events {url}"
                )
                self._followers[url] = (target, task)

    async def aclose(self) -> None:
        syncer, self._syncer = self._syncer, None
        await cancel_all([*(task for _, task in self._followers.values()), syncer])
        for url in self._followers:
            self._index.clear(url)
        self._followers.clear()
        self.translators.clear()
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval_s)
            self.sync()

    async def _follow(self, target: VllmTarget) -> None:
        translator = BlockTranslator(
            self._index, target.url, model=target.model, block_size=self._block_size,
            max_blocks=self._max_blocks,
        )  # fmt: skip
        self.translators[target.url] = translator
        while True:
            try:
                await self._subscribe(target, translator)
            except zmq.ZMQError as exc:
                logger.warning("KV events of %s (%s): %s; retrying", target.url, target.events, exc)
            except Exception:  # a bug must not end the following for good
                logger.exception("following the KV events of %s failed; resyncing", target.url)
            translator.reset()
            await asyncio.sleep(self._retry_s)

    async def _subscribe(self, target: VllmTarget, translator: BlockTranslator) -> None:
        assert self._context is not None
        sub = self._context.socket(zmq.SUB)
        try:
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, self._topic)
            sub.connect(target.events)
            follower = _Sequence(translator)
            follower.catch_up(await self._replay(target, 0))
            while True:
                frames = await sub.recv_multipart()
                if len(frames) != 3 or len(frames[1]) != 8:
                    follower.start_over(f"a message of {len(frames)} frames is not vLLM's")
                    continue
                seq = int.from_bytes(frames[1], "big")
                step = follower.classify(seq, frames[2])
                if step == "gap":
                    follower.fill(seq, await self._replay(target, follower.next_seq))
                elif step == "restart":
                    follower.start_over(f"batch {seq} after {follower.last}: vLLM restarted")
                    follower.catch_up(await self._replay(target, 0))
                follower.receive(seq, frames[2])
        finally:
            sub.close(linger=0)

    async def _replay(self, target: VllmTarget, start: int) -> list[tuple[int, bytes]] | None:
        """The batches the replay socket still has from ``start`` on; None: no answer."""
        if target.replay is None or self._context is None:
            return None
        dealer = self._context.socket(zmq.DEALER)
        try:
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(target.replay)
            await dealer.send_multipart([b"", start.to_bytes(8, "big")])
            batches: list[tuple[int, bytes]] = []
            while len(batches) < _MAX_REPLAY:
                if not await dealer.poll(self._replay_timeout_ms):
                    logger.debug("replay of %s from %d: no answer", target.replay, start)
                    return None
                frames = await dealer.recv_multipart()
                if len(frames) != 3 or len(frames[1]) != 8:
                    return None
                seq = int.from_bytes(frames[1], "big", signed=True)
                if seq == _END_SEQ:
                    break
                batches.append((seq, frames[2]))
            return batches
        finally:
            dealer.close(linger=0)


Step = Literal["next", "gap", "duplicate", "restart"]


class _Sequence:
    """The sequence rules for one subscription (see the module docstring)."""

    def __init__(self, translator: BlockTranslator) -> None:
        self._translator = translator
        self.last: int | None = None
        self._last_ts = float("-inf")

    @property
    def next_seq(self) -> int:
        return 0 if self.last is None else self.last + 1

    def classify(self, seq: int, payload: bytes) -> Step:
        """What batch ``seq`` is: the next one, one after a gap, one seen already, or the
        first ones of a restarted vLLM (numbered from 0 again, and newer)."""
        if self.last is None or seq == self.last + 1:
            return "next"
        if seq > self.last + 1:
            return "gap"
        try:
            ts = decode_batch(payload).ts
        except Malformed:
            return "restart"
        return "duplicate" if ts <= self._last_ts else "restart"

    def start_over(self, why: str) -> None:
        """Forget the endpoint's blocks: what we know can no longer be vouched for."""
        logger.warning("KV events of %s: %s; dropping its blocks", self._translator.url, why)
        self._translator.reset()
        self._translator.stats.resets += 1
        self.last = None
        self._last_ts = float("-inf")

    def catch_up(self, replayed: Sequence[tuple[int, bytes]] | None) -> None:
        """Apply replayed batches that continue the sequence (or start it)."""
        for seq, payload in replayed or ():
            if self.last is None or seq == self.last + 1:
                self._apply(seq, payload)
                self._translator.stats.replayed += 1

    def fill(self, seq: int, replayed: Sequence[tuple[int, bytes]] | None) -> None:
        """A gap before ``seq``: fill it from ``replayed``, or start over from what it has."""
        missing = [(s, p) for s, p in replayed or () if s >= self.next_seq]
        if not missing or missing[0][0] != self.next_seq:
            self.start_over(f"batches {self.next_seq}..{seq - 1} were lost and cannot be replayed")
        self.catch_up(missing)

    def receive(self, seq: int, payload: bytes) -> None:
        """A batch from the subscription, after any gap was dealt with."""
        step = self.classify(seq, payload)
        if step == "duplicate":
            self._translator.stats.duplicates += 1
            return
        if step != "next":  # replay fell short: a suffix is all there is
            self.start_over(f"batch {seq} after {self.last}")
        self._apply(seq, payload)

    def _apply(self, seq: int, payload: bytes) -> None:
        self.last = seq
        try:
            batch = decode_batch(payload)
        except Malformed as exc:
            self.start_over(f"batch {seq} is malformed ({exc})")
            self.last = seq
            return
        self._last_ts = batch.ts
        self._translator.apply(batch)
