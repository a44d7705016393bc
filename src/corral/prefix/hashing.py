"""Chained block hashes over token ids: the whole prefix-cache idea in a few lines.

A prompt's tokens are cut into full blocks of ``block_size``; block *i*'s hash covers
its own tokens and the hash of block *i-1*, so equal hashes mean equal prefixes. The
chain is seeded with the model name (two models never share a prefix). Only full blocks
are hashed, as vLLM does. The router and the workers call the same function, so their
hashes agree across processes (blake2b, no per-process salt, unlike Python's ``hash``).
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Sequence

_DIGEST_BYTES = 8


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest(), "little")


def root_hash(seed: str) -> int:
    """The parent of a prompt's first block: the model name's hash."""
    return _digest(b"corral-prefix-v1\0" + seed.encode("utf-8"))


def token_bytes(tokens: Sequence[int]) -> bytes:
    """Token ids as the hashed bytes: int32, little-endian (int32 holds every vocabulary we serve)."""
    packed = tokens if isinstance(tokens, array) and tokens.typecode == "i" else array("i", tokens)
    if sys.byteorder == "big":  # hash the same bytes on every machine
        packed = array("i", packed)
        packed.byteswap()
    return packed.tobytes()


def token_ids(data: bytes) -> array[int]:
    """The token ids :func:`token_bytes` packed."""
    ids = array("i")
    ids.frombytes(data)
    if sys.byteorder == "big":
        ids.byteswap()
    return ids


def chain_blocks(parent: int, raw: bytes, block_size: int) -> list[int]:
    """Hashes of the full blocks of ``raw`` (token_bytes), chained on from ``parent``."""
    width = block_size * 4
    hashes: list[int] = []
    for start in range(0, len(raw) // width * width, width):
        parent = _digest(parent.to_bytes(_DIGEST_BYTES, "little") + raw[start : start + width])
        hashes.append(parent)
    return hashes


def block_hashes(
    tokens: Sequence[int], *, block_size: int, seed: str, limit: int | None = None
) -> list[int]:
    """Hashes of the full blocks of ``tokens`` (at most ``limit`` blocks), each chained to its parent."""
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    count = len(tokens) // block_size
    if limit is not None:
        count = min(count, limit)
    return chain_blocks(root_hash(seed), token_bytes(tokens[: count * block_size]), block_size)


def text_block_hashes(text: str, *, block_chars: int, seed: str) -> list[int]:
    """Chained hashes of the full ``block_chars``-character blocks of ``text``.

    For approximate prefix routing, which needs no tokenizer: the router learns which
    endpoint saw which text blocks from the requests it routes. These hashes never leave
    the router process, so they use Python's own string hash (SipHash, salted per process)
    instead of blake2b: about five times cheaper, which matters on the request path (an
    8,000-character prompt is 125 blocks of 64).
    """
    if block_chars < 1:
        raise ValueError("block_chars must be >= 1")
    hashes, _, _ = text_continuation(text_root(seed), "", text, block_chars)
    return list(hashes)


def text_root(seed: str) -> int:
    """The parent of a text's first block."""
    return hash(("corral-text-v1", seed))


def text_continuation(
    parent: int, pending: str, text: str, block_chars: int
) -> tuple[tuple[int, ...], int, str]:
    """What ``text`` adds to a text chain that stands at ``parent`` with ``pending``
    characters not yet a full block: the blocks' hashes, the last one (or ``parent``),
    and the characters left over. Chaining these over a text's parts gives the hashes of
    :func:`text_block_hashes` of the whole."""
    if pending:
        text = pending + text
    hashes: list[int] = []
    append = hashes.append
    end = len(text) - block_chars + 1
    for start in range(0, end, block_chars):
        parent = hash((parent, text[start : start + block_chars]))
        append(parent)
    rest = text[len(hashes) * block_chars :]
    return tuple(hashes), parent, rest
