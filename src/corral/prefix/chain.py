"""A prompt's block hashes built piece by piece, with each piece's share of the chain cached.

:func:`corral.prefix.hashing.block_hashes` hashes a whole token list from the seed. The
router sees the same conversation again and again with one more turn, so it builds the
chain incrementally instead: a :class:`Chain` is the state after some tokens (the last
full block's hash, and the tokens of the block not yet full); :meth:`Chain.extend` adds
a piece's tokens. What a piece adds depends only on that state and the piece, so it is
cached with the piece (:class:`Continuation`): a repeated history costs dictionary
lookups, not hashing. The hashing itself is ``corral.prefix.hashing``'s (``token_bytes``,
``chain_blocks``), shared with ``block_hashes``; ``tests/prefix/test_chain.py`` checks
that both give the same hashes.
"""

from __future__ import annotations

from array import array

from corral.prefix.hashing import chain_blocks, root_hash, token_bytes

#: What one piece adds to a chain in a given state: the hashes of the blocks it completes,
#: the state after it (the last block's hash, the tokens left over as int32 bytes), and
#: its number of tokens. A plain tuple of atoms, not a NamedTuple: the garbage collector
#: stops tracking such a tuple (and a dict of them), and the router caches many.
Continuation = tuple[tuple[int, ...], int, bytes, int]


class Chain:
    """Block hashes of a token stream so far (``block_hashes`` of it), growing piece by piece."""

    __slots__ = ("_pending", "block_size", "hashes", "parent", "tokens")

    def __init__(self, *, seed: str, block_size: int) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.block_size = block_size
        self.parent = root_hash(seed)
        self._pending = b""
        self.hashes: list[int] = []
        self.tokens = 0

    @property
    def state(self) -> tuple[int, bytes]:
        """Where the chain stands: what a piece's continuation depends on."""
        return self.parent, self._pending

    def continuation(self, tokens: array[int] | bytes) -> Continuation:
        """What ``tokens`` (ids, or ids packed as hashed: ``token_bytes``) would add to the
        chain as it stands (does not change it)."""
        packed = _packed(tokens)
        data = self._pending + packed
        full = len(data) // (self.block_size * 4) * (self.block_size * 4)
        hashes = chain_blocks(self.parent, data[:full], self.block_size)
        parent = hashes[-1] if hashes else self.parent
        return (tuple(hashes), parent, data[full:], len(packed) // 4)

    def apply(self, step: Continuation) -> None:
        hashes, self.parent, self._pending, tokens = step
        self.hashes.extend(hashes)
        self.tokens += tokens

    def extend(self, tokens: array[int] | bytes) -> None:
        packed = _packed(tokens)
        pending = self._pending + packed
        if len(pending) < self.block_size * 4:  # no block completed: nothing to hash
            self._pending = pending
            self.tokens += len(packed) // 4
            return
        self.apply(self.continuation(packed))



def _packed(tokens: array[int] | bytes) -> bytes:
    """Token ids as hashed (``token_bytes``); bytes are taken as already packed."""
    return tokens if isinstance(tokens, bytes) else token_bytes(tokens)
