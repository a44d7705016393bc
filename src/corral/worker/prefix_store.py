"""A byte-bounded LRU of prefix states, keyed by chained block hashes.

Contract:

- An entry holds a value (for llama.cpp: the KV of a token prefix) and its size in bytes.
  It is named by the chain of block hashes of its prefix
  (:func:`corral.prefix.hashing.block_hashes`), and its key is the last hash of the chain,
  which names the whole prefix.
- ``longest_match(hashes)`` finds, for a prompt's chain, the entry that holds the most of its
  leading blocks, and counts as a use of that entry. An entry longer than the match is a
  match too: the caller keeps the matched part and drops the rest.
- ``put`` keeps the total at or below ``capacity_bytes``: it evicts the least recently used
  entries first. No entry is a prefix of another: ``put`` refuses a chain that an entry
  already holds (its last block is held) and drops the entries the new chain contains.
  An entry larger than the whole capacity is refused.
- Every result is a NamedTuple that names the entries which left, so that the caller can
  report the blocks that are gone.
- Pure bookkeeping: no llama.cpp, no locks, no I/O. One thread calls it at a time (the
  engine's for the RAM store; the disk and Redis tiers index with it under their lock).

Because hashes are chained, the blocks of a prompt that any entry holds are always a run
of leading blocks (holding block *i* means holding its ancestors), so the longest match is
a binary search over the prompt's chain.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from corral.worker.kvstore.stats import TierStats

T = TypeVar("T")


class Entry(NamedTuple, Generic[T]):
    block_hashes: tuple[int, ...]
    value: T
    nbytes: int

    @property
    def key(self) -> int:
        return self.block_hashes[-1]


class Match(NamedTuple, Generic[T]):
    entry: Entry[T]
    #: Leading blocks of the prompt that the entry holds (at most the entry's length).
    blocks: int


class Put(NamedTuple, Generic[T]):
    #: The new entry; None when it was refused (already held, or larger than the capacity).
    stored: Entry[T] | None
    #: Entries that left: evicted for room, or contained in the new entry.
    removed: tuple[Entry[T], ...]


class PrefixStats(NamedTuple):
    """A store's size, and what the engine did with it."""

    entries: int
    blocks: int
    nbytes: int
    capacity_bytes: int
    #: Prompts whose prefix was loaded from the store, and the tokens that saved
    #: beyond what the context held.
    hits: int = 0
    hit_tokens: int = 0
    stored: int = 0
    evicted: int = 0
    #: Prompts for which the store held nothing better than the context (or a lower tier).
    misses: int = 0
    #: Every tier, this RAM store first ("ram", then "disk" and "redis" when configured).
    tiers: tuple[TierStats, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        fields = self._asdict()
        fields["tiers"] = {tier.tier: tier.to_dict() for tier in self.tiers}
        return fields

    def ram_tier(self) -> TierStats:
        """The RAM store as one tier among the others."""
        return TierStats(
            "ram",
            hits=self.hits,
            hit_tokens=self.hit_tokens,
            misses=self.misses,
            stored=self.stored,
            evicted=self.evicted,
            entries=self.entries,
            nbytes=self.nbytes,
        )


class PrefixStore(Generic[T]):
    """Prefix states under a byte budget; see the module docstring for the contract."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[int, Entry[T]] = OrderedDict()  # key -> entry, LRU first
        self._holders: dict[int, set[int]] = {}  # block hash -> keys of the entries holding it
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def blocks(self) -> int:
        """Distinct blocks held."""
        return len(self._holders)

    def holds(self, block_hash: int) -> bool:
        return block_hash in self._holders

    def entries(self) -> list[Entry[T]]:
        """Every entry, least recently used first."""
        return list(self._entries.values())

    def longest_match(self, hashes: Sequence[int]) -> Match[T] | None:
        """The entry holding the most leading blocks of ``hashes`` (the smallest one on a tie)."""
        low, high = 0, len(hashes)  # hashes[:low] are held; hashes[high:] are not
        while low < high:
            middle = (low + high) // 2
            if hashes[middle] in self._holders:
                low = middle + 1
            else:
                high = middle
        if low == 0:
            return None
        keys = self._holders[hashes[low - 1]]
        entry = min((self._entries[key] for key in keys), key=lambda e: (e.nbytes, e.key))
        self._entries.move_to_end(entry.key)
        return Match(entry, low)

    def put(self, hashes: Sequence[int], value: T, nbytes: int) -> Put[T]:
        """Store ``value`` as the state of the prefix ``hashes`` (see the contract)."""
        if not hashes:
            raise ValueError("an entry needs at least one block")
        chain = tuple(hashes)
        if chain[-1] in self._holders:
            for key in self._holders[chain[-1]]:
                self._entries.move_to_end(key)
            return Put(None, ())
        if nbytes > self.capacity_bytes:
            return Put(None, ())
        removed = [self._remove(h) for h in chain if h in self._entries]
        while self._nbytes + nbytes > self.capacity_bytes:
            removed.append(self._remove(next(iter(self._entries))))
        entry = Entry(chain, value, nbytes)
        self._entries[entry.key] = entry
        for block in chain:
            self._holders.setdefault(block, set()).add(entry.key)
        self._nbytes += nbytes
        return Put(entry, tuple(removed))

    def get(self, key: int) -> Entry[T] | None:
        """The entry named ``key``, if any (not a use)."""
        return self._entries.get(key)

    def touch(self, key: int) -> bool:
        """Count a use of the entry named ``key``; False if there is none."""
        if key not in self._entries:
            return False
        self._entries.move_to_end(key)
        return True

    def remove(self, key: int) -> Entry[T] | None:
        """Drop the entry named ``key``, if any."""
        return self._remove(key) if key in self._entries else None

    def clear(self) -> tuple[Entry[T], ...]:
        removed = tuple(self._entries.values())
        self._entries.clear()
        self._holders.clear()
        self._nbytes = 0
        return removed

    def _remove(self, key: int) -> Entry[T]:
        entry = self._entries.pop(key)
        for block in entry.block_hashes:
            keys = self._holders[block]
            keys.discard(key)
            if not keys:
                del self._holders[block]
        self._nbytes -= entry.nbytes
        return entry
