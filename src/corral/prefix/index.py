"""Which endpoints hold which prefix blocks: a bounded, LRU-evicted index.

    endpoint url -> ordered {block hash -> bits}      (least recently used first)

Each endpoint has its own LRU of the block hashes it is believed to hold. The router's
approximate ``prefix`` policy fills it from the requests it routes; the exact ``kv``
policy fills it from the workers' KV events (stored, removed, cleared), where a block may
sit in several media (RAM, disk, ...) and leaves the index when the last one drops it.
A block's bits say in which media it is, and whether a block chained to it (its child)
was stored there too: where no endpoint holds a child of a prompt's last known block,
nothing after it can match, and the router need not tokenize further.

Where a worker's events carry the blocks' tokens, the index also keeps each block's
children's tokens (:class:`corral.prefix.followers.Followers`), so that the router can
tell from a prompt's text alone that it cannot continue past a block.

The whole index is bounded twice, by entries and by bytes, and never grows past the
smaller bound (production-stack #687: an unbounded prefix trie OOM-kills the router); with
``children_tokens`` (the ``kv`` policy) a quarter of the bytes is set aside for the
children's tokens.
When an insert goes over, the least recently used block of the endpoint holding the most
blocks is evicted, so one busy endpoint cannot push every other one out. Bytes are
accounted at :data:`ENTRY_BYTES` per block, the worst case measured with tracemalloc for
these structures under churn (``bench/prefix_index_memory.py`` checks the bound).

Media are weighed (:meth:`PrefixIndex.weighted`): a block in an endpoint's RAM is worth
more than one it must first load from its disk, or from Redis. A *shared* medium (Redis)
is one every endpoint of a model reads: a block any candidate reports there counts, at
that medium's weight, for all of them (no peer router sees lower tiers: llm-d #1650).

Not thread-safe: it is read and written on the event loop only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from corral.prefix.followers import Followers

#: Bytes one indexed block costs (hash key, LRU node and table slots), measured worst case
#: on CPython 3.11 with tracemalloc while the index churns at its bound.
ENTRY_BYTES = 224

#: The medium of blocks the router learns from routed requests (no KV events).
ROUTED = "routed"
#: Media every endpoint of a model reads (a worker's Redis writes serve its peers too).
SHARED_MEDIA = frozenset({"redis"})
#: Token ids as hashed (int32 bytes); named apart from the ``bytes`` property below.
TokenBytes = bytes
#: The share of ``max_bytes`` set aside for children's tokens (:class:`Followers`).
FOLLOWERS_SHARE = 4
#: The bit saying that a child of the block was stored on the same endpoint (it may have
#: left since: the bit only ever makes the router look further, never less far).
_CHILD = 1


class PrefixIndex:
    """Block hashes per endpoint, bounded by ``max_blocks`` and ``max_bytes`` together."""

    def __init__(
        self,
        *,
        max_blocks: int,
        max_bytes: int,
        medium_weights: Mapping[str, float] | None = None,
        shared_media: Iterable[str] = (),
        children_tokens: bool = False,
    ) -> None:
        followers_bytes = max_bytes // FOLLOWERS_SHARE if children_tokens else 0
        if max_blocks < 1 or max_bytes - followers_bytes < ENTRY_BYTES:
            raise ValueError("the prefix index needs room for at least one block")
        self.capacity = min(max_blocks, (max_bytes - followers_bytes) // ENTRY_BYTES)
        self.followers = Followers(followers_bytes)
        self._by_endpoint: dict[str, OrderedDict[int, int]] = {}
        self._media: dict[str | None, int] = {}
        self._weights: dict[str | None, float] = {}  # media not named weigh 1.0
        self._weights.update((medium, weight) for medium, weight in (medium_weights or {}).items())
        self._shared = frozenset(shared_media)
        self._bits_weight: dict[int, float] = {}  # bits -> the best weight of its media
        self._size = 0
        self.evictions = 0

    def __len__(self) -> int:
        return self._size

    @property
    def bytes(self) -> int:
        """The accounted size: blocks times :data:`ENTRY_BYTES`, and the children's tokens."""
        return self._size * ENTRY_BYTES + self.followers.bytes

    def blocks(self, endpoint: str) -> int:
        held = self._by_endpoint.get(endpoint)
        return 0 if held is None else len(held)

    # -- writes (event loop) --------------------------------------------------------

    def store(
        self,
        endpoint: str,
        hashes: Sequence[int],
        medium: str | None = ROUTED,
        parent: int | None = None,
        tokens: TokenBytes | None = None,
    ) -> None:
        """``endpoint`` holds the chain ``hashes`` (in ``medium``), whose first block is the
        child of ``parent`` (None: the prompt's first block); each becomes most recently used.
        ``tokens``: the blocks' tokens (int32 bytes, as many per block), where known."""
        held = self._by_endpoint.get(endpoint)
        if held is None:
            held = self._by_endpoint[endpoint] = OrderedDict()
        self._follow(parent, hashes, tokens)
        if parent is not None and parent in held and hashes:
            held[parent] |= _CHILD
        bit = self._medium_bit(medium)
        last = len(hashes) - 1
        for position, block in enumerate(hashes):
            mark = bit if position == last else bit | _CHILD
            bits = held.get(block)
            if bits is None:
                held[block] = mark
                self._size += 1
            else:
                if bits | mark != bits:  # most blocks of a repeated prompt: already marked
                    held[block] = bits | mark
                held.move_to_end(block)
        if self._size > self.capacity:
            self._evict()

    def _follow(self, parent: int | None, hashes: Sequence[int], tokens: TokenBytes | None) -> None:
        """Record each stored block as a child of the block before it (before the child bits
        are set: a block that had children before its record has unknown children)."""
        followers = self.followers
        if tokens is None and not followers:
            return  # nothing known to mark unknown (the prefix policy's stores, say)
        width = len(tokens) // len(hashes) if tokens and hashes else 0
        if tokens is not None and (not width or width * len(hashes) != len(tokens)):
            tokens = None
        before = parent
        for position, block in enumerate(hashes):
            if before is not None and (tokens is not None or before in followers):
                child = None if tokens is None else tokens[position * width : (position + 1) * width]
                followers.record(before, block, child, had_children=self.extended(before))
            before = block

    def touch(self, endpoint: str, hashes: Iterable[int]) -> None:
        """Mark blocks ``endpoint`` already holds as just used (unknown ones are ignored)."""
        held = self._by_endpoint.get(endpoint)
        if held is None:
            return
        for block in hashes:
            if block in held:
                held.move_to_end(block)

    def remove(self, endpoint: str, hashes: Iterable[int], medium: str | None = ROUTED) -> None:
        """``endpoint`` dropped these blocks from ``medium``; gone once no medium holds one."""
        held = self._by_endpoint.get(endpoint)
        if held is None:
            return
        keep = ~self._medium_bit(medium)
        for block in hashes:
            bits = held.get(block)
            if bits is None:
                continue
            bits &= keep
            if bits & ~_CHILD:
                held[block] = bits
            else:
                del held[block]
                self._size -= 1

    def clear(self, endpoint: str) -> None:
        """Forget everything ``endpoint`` holds (it restarted, disconnected or left)."""
        held = self._by_endpoint.pop(endpoint, None)
        if held is not None:
            self._size -= len(held)

    # -- reads ----------------------------------------------------------------------

    def extended(self, block: int) -> bool:
        """Whether some endpoint holds ``block`` and a block chained after it.

        With chained hashes, where none does, no endpoint can match a prompt past
        ``block``: the prompt need not be tokenized or hashed further.
        """
        return any(blocks.get(block, 0) & _CHILD for blocks in self._by_endpoint.values())

    def matched(self, hashes: Sequence[int], endpoints: Sequence[str]) -> list[int]:
        """Per endpoint, how many leading blocks of ``hashes`` it can serve (a usable prefix):
        its own, or any of ``endpoints``' in a shared medium."""
        return [count for count, _ in self.weighted(hashes, endpoints)]

    def weighted(
        self, hashes: Sequence[int], endpoints: Sequence[str], shared_from: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Per endpoint: the leading blocks of ``hashes`` it can serve, and their sum of
        weights (each block at the best weight of the media that hold it). A block that one
        of ``shared_from`` (default: ``endpoints``; give every endpoint of the model, in any
        pool) holds in a shared medium can be served by all."""
        helds = [self._by_endpoint.get(endpoint) for endpoint in endpoints]
        if not self._weighed_bits():  # every medium seen weighs 1.0, none is shared: count
            return [(count, float(count)) for count in self._counts(hashes, helds)]
        peers = helds if shared_from is None else [self._by_endpoint.get(url) for url in shared_from]
        shared_bits = self._shared_bits()
        shared: dict[int, float | None] = {}  # position -> the shared weight, when needed
        results: list[tuple[int, float]] = []
        for held in helds:
            count, total = 0, 0.0
            for position, block in enumerate(hashes):
                bits = held.get(block, 0) & ~_CHILD if held else 0
                if bits:
                    weight = self._weight(bits)
                    if shared_bits and not bits & shared_bits:  # a peer's Redis copy may weigh more
                        if position not in shared:
                            shared[position] = self._shared_weight(block, peers, shared_bits)
                        weight = max(weight, shared[position] or 0.0)
                    total += weight
                elif shared_bits:
                    if position not in shared:
                        shared[position] = self._shared_weight(block, peers, shared_bits)
                    peer_weight = shared[position]
                    if peer_weight is None:
                        break
                    total += peer_weight
                else:
                    break
                count += 1
            results.append((count, total))
        return results

    # -- internals ------------------------------------------------------------------

    @staticmethod
    def _counts(hashes: Sequence[int], helds: Sequence[OrderedDict[int, int] | None]) -> list[int]:
        counts: list[int] = []
        for held in helds:
            count = 0
            if held:
                for block in hashes:
                    if block not in held:
                        break
                    count += 1
            counts.append(count)
        return counts

    def _weighed_bits(self) -> int:
        """The bits of the media that weigh other than 1.0 or are shared (0: plain counting)."""
        bits = 0
        for medium, bit in self._media.items():
            if medium in self._shared or self._weights.get(medium, 1.0) != 1.0:
                bits |= bit
        return bits

    def _weight(self, bits: int) -> float:
        weight = self._bits_weight.get(bits)
        if weight is None:
            weight = max(
                (self._weights.get(medium, 1.0) for medium, bit in self._media.items() if bits & bit),
                default=0.0,
            )
            self._bits_weight[bits] = weight
        return weight

    def _shared_bits(self) -> int:
        bits = 0
        for medium in self._shared:
            bits |= self._media.get(medium, 0)
        return bits

    def _shared_weight(
        self, block: int, helds: Sequence[OrderedDict[int, int] | None], shared_bits: int
    ) -> float | None:
        """The weight of ``block`` for an endpoint that lacks it, if some endpoint has it in
        a shared medium; else None."""
        found = 0
        for held in helds:
            if held:
                found |= held.get(block, 0) & shared_bits
        return self._weight(found) if found else None

    def _medium_bit(self, medium: str | None) -> int:
        bit = self._media.get(medium)
        if bit is None:
            if len(self._media) >= 30:  # keep the bits in a small int
                raise ValueError(f"too many KV media (got '{medium}')")
            bit = self._media[medium] = 2 << len(self._media)  # bit 0 is _CHILD
        return bit

    def _evict(self) -> None:
        """Down to capacity: the oldest blocks of whichever endpoint holds the most."""
        while self._size > self.capacity:
            endpoint, held = max(self._by_endpoint.items(), key=lambda item: len(item[1]))
            surplus = min(len(held), self._size - self.capacity)
            for _ in range(surplus):
                block, _bits = held.popitem(last=False)
                self.followers.forget(block)
            self._size -= surplus
            self.evictions += surplus
            if not held:
                del self._by_endpoint[endpoint]
