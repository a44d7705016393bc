"""What :class:`~corral.worker.kvstore.tiered.LowerTiers` needs from a tier below RAM.

A tier holds encoded states (:mod:`corral.worker.kvstore.codec`), each named by the chain
of block hashes of its prefix, whose last hash is its *key*. Contract of each method:

- ``match(hashes)``: a cheap look at what the tier holds for a prompt's chain (an index
  in memory, or one Redis round trip): the candidate sharing the most leading blocks, or
  None. It loads nothing.
- ``load(candidate)``: the encoded state as stored, or None when it is gone (another worker
  evicted it, it expired) or cannot be read (counted and logged). It never raises for a
  tier's faults (I/O, Redis down). The caller decodes and checks it
  (:func:`~corral.worker.kvstore.tiered.load_state`: a damaged or incompatible state is
  handed back to ``discard``) and confirms its tokens before using it.
- ``discard(key, kind, reason)``: drop a state the caller found unusable.
- ``holds(chain)``: whether the tier is known to hold all of that prefix (so a write can
  be skipped; counts as a use); ``available()``: False while the tier is down (then it is skipped).
- ``store(chain, blob)``: write an encoded state (on the writer thread), keeping the tier
  within its byte bound; faults are counted and logged, never raised.
- Each tier publishes the blocks it holds to the worker's KV event log in its own medium
  (``hold((tier, key), chain, medium)``), and ``close()`` releases them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from corral.worker.kvstore.stats import TierCounters, TierStats


class Candidate(NamedTuple):
    """A stored state that shares ``blocks`` leading blocks with a prompt (by hash)."""

    key: int
    blocks: int
    #: Redis: the prompt's chunk-boundary hash whose pointer named the state.
    pointer: int | None = None


class Tier(Protocol):
    name: str
    #: True when a match can only end at a chunk boundary (Redis pointers); False when it
    #: can end at any block (an index of chains in memory).
    chunked: bool
    counters: TierCounters

    def available(self) -> bool: ...

    def match(self, hashes: Sequence[int]) -> Candidate | None: ...

    def load(self, candidate: Candidate) -> bytes | None: ...

    def discard(self, key: int, kind: str, reason: str) -> None: ...

    def holds(self, chain: Sequence[int]) -> bool: ...

    def store(self, chain: Sequence[int], blob: bytes) -> None: ...

    def stats(self) -> TierStats: ...

    def close(self) -> None: ...
