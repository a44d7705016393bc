"""Prefix reuse for one llama.cpp context: its own last prompt, and a RAM store of others.

One ``Llama`` keeps the KV of the sequence it ran last, so a repeated prefix is free only
until another user's prompt replaces it. :class:`PrefixCache` keeps more, on the engine
thread, around each generation:

- :meth:`~PrefixCache.prepare` (before): find the stored prefix that shares the most
  tokens with the prompt; when it beats what the context already shares, load it (see
  :mod:`corral.worker.seq_state`) so that ``generate()`` prefills only the rest. Returns
  the prompt tokens taken from the KV cache, store hits included.
- :meth:`~PrefixCache.remember` (after the response is finished): copy the KV of what the
  context evaluated -- the prompt and the answer, so a conversation's next turn prefills only
  its new message -- rounded down to a block, into the store (unless it is shorter than
  ``min_tokens`` or already held), and report the blocks held: those of the context
  (prompt and generated tokens) and those of every stored prefix.

Entries are named by :func:`~corral.prefix.hashing.block_hashes` of their tokens (seeded with
the model name), the same hashes a router computes; a match is confirmed token by token
before it is loaded, so a hash collision can never load another prompt's KV. The context's
blocks are reported when a request ends, so they lag the context by at most one request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from llama_cpp import Llama

from corral.config import CacheConfig
from corral.prefix.hashing import block_hashes
from corral.worker.kv_events import KVEventLog
from corral.worker.llama_model import cached_prefix, common_prefix
from corral.worker.prefix_store import PrefixStats, PrefixStore
from corral.worker.seq_state import SeqState, capture_prefix, restore

logger = logging.getLogger(__name__)

#: The ledger's holder for the live context (store entries are held as ("store", key)).
CONTEXT = "context"


class PrefixCache:
    """The store and the reporting around one llama.cpp context (engine thread only)."""

    def __init__(
        self, *, model: str, block_size: int, config: CacheConfig, events: KVEventLog
    ) -> None:
        self._seed = model
        self._block_size = block_size
        self._min_tokens = config.min_tokens
        self._store: PrefixStore[SeqState] = PrefixStore(config.ram_bytes)
        self._events = events
        #: Replaced, never mutated: other threads may read it at any time.
        self.stats = PrefixStats(0, 0, 0, config.ram_bytes)

    def hashes(self, tokens: Sequence[int]) -> list[int]:
        return block_hashes(tokens, block_size=self._block_size, seed=self._seed)

    def prepare(self, llama: Llama, prompt: Sequence[int]) -> int:
        """Load the best stored prefix if it beats the context's; the tokens reused."""
        in_context = cached_prefix(llama, prompt)
        if not len(self._store):
            return in_context
        match = self._store.longest_match(self.hashes(prompt))
        if match is None:
            return in_context
        state = match.entry.value
        shared = common_prefix(state.tokens, prompt)
        reusable = shared - 1 if shared == len(prompt) else shared  # the last is replayed
        if reusable <= in_context:
            return in_context
        if not restore(llama, state):
            logger.warning("llama.cpp refused a stored prefix of %d tokens", len(state.tokens))
            self._drop(match.entry.key)
            return 0
        cached = cached_prefix(llama, prompt)
        self.stats = self.stats._replace(
            hits=self.stats.hits + 1, hit_tokens=self.stats.hit_tokens + cached - in_context
        )
        return cached

    def remember(self, llama: Llama) -> None:
        """Store the evaluated tokens' block-aligned prefix if worth it; report the blocks held."""
        evaluated = llama.input_ids[: llama.n_tokens]
        in_context = self.hashes(evaluated.tolist())
        state = self._capture(llama, in_context)
        with self._events.recording() as ledger:
            ledger.hold(CONTEXT, in_context)
            if state is not None:
                put = self._store.put(
                    in_context[: len(state.tokens) // self._block_size], state, state.nbytes
                )
                for entry in put.removed:
                    ledger.release(("store", entry.key))
                if put.stored is not None:
                    ledger.hold(("store", put.stored.key), put.stored.block_hashes)
                self.stats = self.stats._replace(
                    stored=self.stats.stored + (put.stored is not None),
                    evicted=self.stats.evicted + len(put.removed),
                )
            self._update_sizes()

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
