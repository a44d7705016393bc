"""The tiers below RAM as one: lookup in order (disk, then Redis), write-through to all.

:class:`LowerTiers` is what :class:`~corral.worker.prefix_cache.PrefixCache` consults when
the live context and the RAM store do not hold enough of a prompt. Contract:

- :meth:`~LowerTiers.find` returns the state that saves the prompt the most tokens beyond
  ``better_than`` (what the context or RAM already give), or None. It asks the tiers in
  order, each only if it could beat the best candidate so far (the disk index is in
  memory; Redis costs a round trip, and keeps only chunk-cut prefixes), then loads the
  best candidate; if that one is gone or damaged, the next best (asking a tier skipped
  before if it could now win). The state's tokens are confirmed against the prompt,
  token by token, before it is returned: a hash collision can never load another prompt's
  KV. On a tie, the faster tier wins. Each consulted tier counts one hit or one miss.
- *Promotion* needs no copy: after the request, the context (holding the loaded prefix,
  the rest of the prompt and the answer) is stored in RAM by the prefix cache and written
  through to the lower tiers that lack it, so a Redis hit lands on disk and in RAM.
- :meth:`~LowerTiers.keep` writes a chunk-cut state to every available tier that does not
  hold it: on the background writer (dropped and counted as ``dropped`` if its queue is
  full), or at once with ``sync=True`` (a prefill worker stores before it answers).
  The state is encoded once for all tiers.
- :meth:`~LowerTiers.reject`: llama.cpp refused a state that decoded fine; its tier drops it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from corral.worker.kvstore.codec import BlobError, decode, encode
from corral.worker.kvstore.stats import TierStats
from corral.worker.kvstore.tier import Candidate, Tier
from corral.worker.kvstore.writer import BackgroundWriter
from corral.worker.llama_model import common_prefix
from corral.worker.seq_state import SeqState

#: How long closing waits for queued writes.
CLOSE_TIMEOUT_S = 30.0


class Found(NamedTuple):
    state: SeqState
    tier: Tier
    key: int
    #: Prompt tokens the state gives (confirmed; the last prompt token is always replayed).
    reusable: int


def load_state(tier: Tier, candidate: Candidate, compat: bytes) -> SeqState | None:
    """``candidate``'s state from ``tier``, checked (:func:`~corral.worker.kvstore.codec.decode`);
    None when it is gone, or damaged or incompatible: then the tier discards it."""
    blob = tier.load(candidate)
    if blob is None:
        return None
    try:
        return decode(blob, compat)
    except BlobError as exc:
        tier.discard(candidate.key, exc.kind, str(exc))
        return None


def reusable_tokens(shared: int, n_prompt: int) -> int:
    """Tokens a prompt can take from a state sharing ``shared`` leading tokens with it."""
    return shared - 1 if shared >= n_prompt else shared


class LowerTiers:
    """Disk and/or Redis behind the RAM store (see the module docstring)."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        compat: bytes,
        block_size: int,
        chunk_tokens: int,
        writer: BackgroundWriter | None = None,
    ) -> None:
        self.tiers = tuple(tiers)
        self._compat = compat
        self.block_size = block_size
        #: Lower tiers keep prefixes of whole chunks; a chunk is rounded down to whole blocks.
        self.chunk_blocks = max(1, chunk_tokens // block_size)
        self._writer = writer

    def cut(self, n_blocks: int) -> int:
        """The blocks of an ``n_blocks`` prefix that the lower tiers keep (whole chunks)."""
        return n_blocks // self.chunk_blocks * self.chunk_blocks

    # -- lookups (engine thread) -------------------------------------------------------

    def find(self, prompt: Sequence[int], hashes: Sequence[int], *, better_than: int) -> Found | None:
        consulted: set[int] = set()
        pending: list[tuple[int, int, Tier, Candidate]] = []  # (estimate, order, tier, candidate)
        while True:
            self._consult(prompt, hashes, better_than, consulted, pending)
            if not pending:
                return None
            pending.sort(key=lambda c: (-c[0], c[1]))
            _estimate, _order, tier, candidate = pending.pop(0)
            state = load_state(tier, candidate, self._compat)
            shared = 0 if state is None else common_prefix(state.tokens, prompt)
            if state is not None and reusable_tokens(shared, len(prompt)) > better_than:
                for _e, _o, other, _c in pending:
                    other.counters.miss()
                return Found(state, tier, candidate.key, reusable_tokens(shared, len(prompt)))
            tier.counters.miss()  # gone, damaged, or a hash collision: the next best, if any

    def _consult(
        self,
        prompt: Sequence[int],
        hashes: Sequence[int],
        better_than: int,
        consulted: set[int],
        pending: list[tuple[int, int, Tier, Candidate]],
    ) -> None:
        """Ask each tier not asked yet that could beat the best candidate so far."""
        best = max([better_than, *(c[0] for c in pending)])
        for order, tier in enumerate(self.tiers):
            reach = self.cut(len(hashes)) if tier.chunked else len(hashes)
            if order in consulted or reusable_tokens(reach * self.block_size, len(prompt)) <= best:
                continue
            if not tier.available():
                continue
            consulted.add(order)
            candidate = tier.match(hashes)
            estimate = 0 if candidate is None else reusable_tokens(candidate.blocks * self.block_size, len(prompt))
            if candidate is None or estimate <= better_than:
                tier.counters.miss()
                continue
            pending.append((estimate, order, tier, candidate))
            best = max(best, estimate)

    def hit(self, found: Found, tokens: int) -> None:
        """``found`` was loaded and saved ``tokens`` prompt tokens."""
        found.tier.counters.hit(tokens)

    def reject(self, found: Found) -> None:
        found.tier.discard(found.key, "rejected", "llama.cpp refused the state")

    # -- writes ------------------------------------------------------------------------

    def wants(self, chain: Sequence[int]) -> bool:
        """Whether some available tier lacks the prefix ``chain`` (whole chunks)."""
        return any(tier.available() and not tier.holds(chain) for tier in self.tiers)

    def keep(self, chain: Sequence[int], state: SeqState, *, sync: bool = False) -> None:
        """Write ``state`` (the prefix ``chain``) to every available tier lacking it."""
        chain = tuple(chain)

        def write() -> None:
            targets = [t for t in self.tiers if t.available() and not t.holds(chain)]
            if not targets:
                return
            blob = encode(state, self._compat)
            for tier in targets:
                tier.store(chain, blob)

        if sync or self._writer is None:
            write()
        elif not self._writer.submit(write):
            for tier in self.tiers:
                tier.counters.error("dropped", "the write queue is full; a prefix was not written")

    def flush(self, timeout_s: float) -> bool:
        """Wait for the queued writes; False on timeout."""
        return self._writer is None or self._writer.flush(timeout_s)

    def stats(self) -> tuple[TierStats, ...]:
        return tuple(tier.stats() for tier in self.tiers)

    def close(self) -> None:
        """Finish the queued writes, then stop publishing the tiers' blocks."""
        if self._writer is not None:
            self._writer.close(CLOSE_TIMEOUT_S)
        for tier in self.tiers:
            tier.close()
