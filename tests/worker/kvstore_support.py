"""Small helpers of the KV tier tests: states without a model, their chains, an event mirror."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Sequence

import numpy as np

from corral.prefix.events import AllBlocksCleared, BlockStored, KVEvent
from corral.prefix.hashing import block_hashes
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.stats import TierCounters, TierStats
from corral.worker.kvstore.tier import Candidate
from corral.worker.seq_state import SeqState

BLOCK = 4
SEED = "m"
COMPAT = bytes(range(16))


def hashes(tokens: Sequence[int]) -> list[int]:
    return block_hashes(tokens, block_size=BLOCK, seed=SEED)


def state(tokens: Sequence[int], nbytes: int = 1000, fill: int = 7) -> SeqState:
    """A made-up sequence state: ``tokens`` and ``nbytes`` bytes of "KV"."""
    data = (ctypes.c_uint8 * nbytes)(*([fill % 256] * nbytes))
    return SeqState(np.asarray(tokens, dtype=np.intc), data)


def held(log: KVEventLog) -> dict[str, set[int]]:
    """Medium -> blocks, from the log's snapshot (what a router would know)."""
    media: dict[str, set[int]] = {}
    for event in log.snapshot().events:
        if isinstance(event, BlockStored):
            media.setdefault(event.medium, set()).update(event.block_hashes)
    return media


def replay(events: Iterable[KVEvent]) -> dict[str, set[int]]:
    """Medium -> blocks, from a stream of events."""
    media: dict[str, set[int]] = {}
    for event in events:
        if isinstance(event, AllBlocksCleared):
            media.clear()
        elif isinstance(event, BlockStored):
            media.setdefault(event.medium, set()).update(event.block_hashes)
        else:
            media.get(event.medium, set()).difference_update(event.block_hashes)
    return {medium: blocks for medium, blocks in media.items() if blocks}


class MemoryTier:
    """A lower tier in a dict: the real Tier protocol, for LowerTiers' tests."""

    def __init__(self, name: str, *, chunked: bool = False) -> None:
        self.name = name
        self.chunked = chunked
        self.counters = TierCounters(name)
        self.blobs: dict[tuple[int, ...], bytes] = {}
        self.up = True
        self.loads = 0

    def available(self) -> bool:
        return self.up

    def match(self, hashes: Sequence[int]) -> Candidate | None:
        best: Candidate | None = None
        for chain in self.blobs:
            shared = 0
            while shared < min(len(chain), len(hashes)) and chain[shared] == hashes[shared]:
                shared += 1
            if shared and (best is None or shared > best.blocks):
                best = Candidate(chain[-1], shared)
        return best

    def load(self, candidate: Candidate) -> bytes | None:
        self.loads += 1
        chain = next(c for c in self.blobs if c[-1] == candidate.key)
        return self.blobs[chain]

    def discard(self, key: int, kind: str, reason: str) -> None:
        self.counters.error(kind, reason)
        self.blobs = {c: b for c, b in self.blobs.items() if c[-1] != key}

    def holds(self, chain: Sequence[int]) -> bool:
        return any(c[: len(chain)] == tuple(chain) for c in self.blobs)

    def store(self, chain: Sequence[int], blob: bytes) -> None:
        self.blobs[tuple(chain)] = blob
        self.counters.stored()

    def stats(self) -> TierStats:
        return self.counters.snapshot(entries=len(self.blobs), nbytes=sum(map(len, self.blobs.values())))

    def close(self) -> None:
        self.up = False
