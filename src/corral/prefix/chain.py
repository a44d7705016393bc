"""A prompt's block hashes built piece by piece, with each piece's share of the chain cached.

:func:`corral.prefix.hashing.block_hashes` hashes a whole token list from the seed. The
router sees the same conversation again and again with one more turn, so it builds the
chain incrementally instead: a :class:`Chain` is the state after some tokens (the last
full block's hash, and the tokens of the block not yet full); :meth:`Chain.extend` adds
a piece's tokens. What a piece adds depends only on that state and the piece, so it is
cached with the piece (:class:`Continuation`): a repeated history costs dictionary
lookups, not hashing. The construction is ``block_hashes``' own (blake2b-64 of the parent
hash and the block's int32 tokens, little-endian); ``tests/prefix/test_chain.py`` checks
that both give the same hashes.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from typing import NamedTuple

from corral.prefix.hashing import root_hash

_DIGEST_BYTES = 8
_BIG_ENDIAN = sys.byteorder == "big"


class Continuation(NamedTuple):
    """What one piece adds to a chain in a given state: the blocks it completes, and the
    state after it (the last block's hash, the tokens left over, as int32 bytes)."""

    hashes: tuple[int, ...]
    parent: int
    pending: bytes
    tokens: int


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

    def continuation(self, tokens: array[int]) -> Continuation:
        """What ``tokens`` would add to the chain as it stands (does not change it)."""
        raw = _int32_bytes(tokens)
        data = self._pending + raw
        width = self.block_size * 4
        full = len(data) // width * width
        parent = self.parent
        hashes: list[int] = []
        for start in range(0, full, width):
            digest = hashlib.blake2b(
                parent.to_bytes(_DIGEST_BYTES, "little") + data[start : start + width],
                digest_size=_DIGEST_BYTES,
            ).digest()
            parent = int.from_bytes(digest, "little")
            hashes.append(parent)
        return Continuation(tuple(hashes), parent, data[full:], len(tokens))

    def apply(self, step: Continuation) -> None:
        self.hashes.extend(step.hashes)
        self.parent = step.parent
        self._pending = step.pending
        self.tokens += step.tokens

    def extend(self, tokens: array[int]) -> None:
        pending = self._pending + _int32_bytes(tokens)
        if len(pending) < self.block_size * 4:  # no block completed: nothing to hash
            self._pending = pending
            self.tokens += len(tokens)
            return
        self.apply(self.continuation(tokens))


def _int32_bytes(tokens: array[int]) -> bytes:
    if tokens.typecode != "i":
        tokens = array("i", tokens)
    if _BIG_ENDIAN:  # hash the same bytes on every machine
        tokens = array("i", tokens)
        tokens.byteswap()
    return tokens.tobytes()
