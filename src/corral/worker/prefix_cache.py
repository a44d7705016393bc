"""Prefix reuse for one llama.cpp context: its own last prompt, a RAM store, and lower tiers.

One ``Llama`` keeps the KV of the sequence it ran last, so a repeated prefix is free only
until another user's prompt replaces it. :class:`PrefixCache` keeps more, on the engine
thread, around each generation:

- :meth:`~PrefixCache.prepare` (before): find the stored prefix that shares the most
  tokens with the prompt -- in the RAM store, then in the lower tiers (disk, Redis:
  :mod:`corral.worker.kvstore`) when they could give more; when it beats what the context
  already shares, load it (see :mod:`corral.worker.seq_state`) so that ``generate()``
  prefills only the rest. Returns the prompt tokens taken from the KV cache, hits included.
- :meth:`~PrefixCache.remember` (after the response is finished): copy the KV of what the
  context evaluated -- the prompt and the answer, so a conversation's next turn prefills only
  its new message -- rounded down to a block, into the RAM store (unless it is shorter than
  ``min_tokens`` or already held), and rounded down to whole chunks into the lower tiers
  that lack it (in the background, or at once with ``sync=True``); report the blocks held:
  those of the context (prompt and generated tokens) and those of every stored prefix, each
  tier in its own medium. Writing the context through is also how a lower-tier hit is
  promoted to the faster tiers.

Entries are named by :func:`~corral.prefix.hashing.block_hashes` of their tokens (seeded with
the model name), the same hashes a router computes; a match is confirmed token by token
before it is loaded, so a hash collision can never load another prompt's KV. The context's
blocks are reported before a response's last byte (:meth:`~PrefixCache.publish_context`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from llama_cpp import Llama

from corral.config import CacheConfig
from corral.prefix.hashing import block_hashes
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.tiered import LowerTiers, reusable_tokens
from corral.worker.llama_model import cached_prefix, common_prefix
from corral.worker.prefix_store import PrefixStats, PrefixStore
from corral.worker.seq_state import SeqState, capture_prefix, restore

logger = logging.getLogger(__name__)

#: The ledger's holder for the live context (store entries are held as ("store", key)).
CONTEXT = "context"


class PrefixCache:
    """The store and the reporting around one llama.cpp context (engine thread only)."""

    def __init__(
        self,
        *,
        model: str,
        block_size: int,
        config: CacheConfig,
        events: KVEventLog,
        tiers: LowerTiers | None = None,
    ) -> None:
        self._seed = model
        self._block_size = block_size
        self._min_tokens = config.min_tokens
        self._store: PrefixStore[SeqState] = PrefixStore(config.ram_bytes)
        self._events = events
        self._tiers = tiers
        #: The RAM store's; replaced, never mutated: other threads may read it at any time.
        self.stats = PrefixStats(0, 0, 0, config.ram_bytes)

    @property
    def tiers(self) -> LowerTiers | None:
        return self._tiers

    def use_tiers(self, tiers: LowerTiers | None) -> None:
        """Consult and fill ``tiers`` from now on (set once the model is loaded)."""
        self._tiers = tiers

    def snapshot(self) -> PrefixStats:
        """The RAM store's stats, with every tier's (any thread)."""
        stats = self.stats
        lower = self._tiers.stats() if self._tiers is not None else ()
        return stats._replace(tiers=(stats.ram_tier(), *lower))

    def hashes(self, tokens: Sequence[int]) -> list[int]:
        return block_hashes(tokens, block_size=self._block_size, seed=self._seed)

    def prepare(self, llama: Llama, prompt: Sequence[int]) -> int:
        """Load the best stored prefix if it beats the context's; the tokens reused."""
        in_context = cached_prefix(llama, prompt)
        if not len(self._store) and self._tiers is None:
            self._count_ram(hit=False)
            return in_context
        hashes = self.hashes(prompt)
        best, state, ram_key = in_context, None, None
        match = self._store.longest_match(hashes) if len(self._store) else None
        if match is not None:
            shared = common_prefix(match.entry.value.tokens, prompt)
            if reusable_tokens(shared, len(prompt)) > best:
                best, state, ram_key = reusable_tokens(shared, len(prompt)), match.entry.value, match.entry.key
        found = self._tiers.find(prompt, hashes, better_than=best) if self._tiers is not None else None
        if found is not None:
            state, ram_key = found.state, None
        if state is None:
            self._count_ram(hit=False)
            return in_context
        if not restore(llama, state):
            logger.warning("llama.cpp refused a stored prefix of %d tokens", len(state.tokens))
            if found is not None and self._tiers is not None:
                self._tiers.reject(found)
            elif ram_key is not None:
                self._drop(ram_key)
            return 0
        cached = cached_prefix(llama, prompt)
        if found is not None and self._tiers is not None:
            self._tiers.hit(found, cached - in_context)
            self._count_ram(hit=False)
        else:
            self._count_ram(hit=True, tokens=cached - in_context)
        return cached

    def publish_context(self, llama: Llama) -> None:
        """Report the blocks the context now holds (prompt and answer), before the response
        ends: a client's next turn may reach the router right after the last byte, and the
        router should already know where this one's KV is. Hashing only; the copy into the
        store waits for :meth:`remember`."""
        tokens = llama.input_ids[: llama.n_tokens].tolist()
        in_context = self.hashes(tokens)
        with self._events.recording() as ledger:
            ledger.hold(CONTEXT, in_context, tokens=tokens)

    def remember(self, llama: Llama, *, sync: bool = False) -> None:
        """Store the evaluated tokens' block-aligned prefix if worth it (and its whole chunks
        in the lower tiers: in the background, or before returning when ``sync``); report
        the blocks held."""
        evaluated = llama.input_ids[: llama.n_tokens].tolist()
        in_context = self.hashes(evaluated)
        state = self._capture(llama, in_context)
        with self._events.recording() as ledger:
            ledger.hold(CONTEXT, in_context, tokens=evaluated)
            if state is not None:
                put = self._store.put(
                    in_context[: len(state.tokens) // self._block_size], state, state.nbytes
                )
                for entry in put.removed:
                    ledger.release(("store", entry.key))
                if put.stored is not None:
                    ledger.hold(("store", put.stored.key), put.stored.block_hashes, tokens=evaluated)
                self.stats = self.stats._replace(
                    stored=self.stats.stored + (put.stored is not None),
                    evicted=self.stats.evicted + len(put.removed),
                )
            self._update_sizes()
        self._write_through(llama, in_context, state, sync=sync)

    def flush(self, timeout_s: float) -> bool:
        """Wait until the lower tiers' queued writes are done; False on timeout."""
        return self._tiers is None or self._tiers.flush(timeout_s)

    def close(self) -> None:
        """Forget everything and finish the lower tiers' writes (the model is being unloaded)."""
        self.clear()
        if self._tiers is not None:
            self._tiers.close()

    def clear(self) -> None:
        """Drop every stored prefix and forget the context (the model is being unloaded)."""
        removed = self._store.clear()
        with self._events.recording() as ledger:
            ledger.release(CONTEXT)
            for entry in removed:
                ledger.release(("store", entry.key))
            self._update_sizes()

    def _capture(self, llama: Llama, in_context: list[int]) -> SeqState | None:
        """The KV of everything the context evaluated (the prompt and the answer generated
        so far), block-aligned, if it should be stored: the next turn of a conversation
        repeats both, so it prefills only its new message (vLLM caches generated blocks too)."""
        blocks = len(in_context)
        n_tokens = blocks * self._block_size
        if n_tokens < self._min_tokens or self._store.capacity_bytes == 0:
            return None
        if self._store.holds(in_context[blocks - 1]):
            self._store.longest_match(in_context[:blocks])  # a use: keep it fresh
            return None
        return capture_prefix(llama, n_tokens)

    def _write_through(
        self, llama: Llama, in_context: list[int], state: SeqState | None, *, sync: bool
    ) -> None:
        """Hand the whole chunks of the context to the lower tiers that lack them."""
        tiers = self._tiers
        if tiers is None:
            return
        blocks = tiers.cut(len(in_context))
        n_tokens = blocks * self._block_size
        if blocks == 0 or n_tokens < self._min_tokens or not tiers.wants(in_context[:blocks]):
            return
        if state is None or len(state.tokens) != n_tokens:
            state = capture_prefix(llama, n_tokens)
        tiers.keep(in_context[:blocks], state, sync=sync)

    def _count_ram(self, *, hit: bool, tokens: int = 0) -> None:
        if self._store.capacity_bytes == 0:
            return
        stats = self.stats
        if hit:
            self.stats = stats._replace(hits=stats.hits + 1, hit_tokens=stats.hit_tokens + tokens)
        else:
            self.stats = stats._replace(misses=stats.misses + 1)

    def _drop(self, key: int) -> None:
        with self._events.recording() as ledger:
            if self._store.remove(key) is not None:
                ledger.release(("store", key))
            self._update_sizes()

    def _update_sizes(self) -> None:
        store = self._store
        self.stats = self.stats._replace(
            entries=len(store), blocks=store.blocks, nbytes=store.nbytes
        )
