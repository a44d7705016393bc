"""A sequence state as bytes, for the disk and Redis tiers, and back.

Layout (little-endian)::

    offset  size      field
    0       8         magic b"CORRALKV"
    8       2         format version (1)
    10      2         reserved (0)
    12      16        compatibility digest (corral.worker.kvstore.compat)
    28      4         n_tokens
    32      8         state bytes
    40      4*n       the token ids (int32)
    ...     state     llama.cpp's sequence state (llama_state_seq_get_data)
    end-4   4         crc32 of everything before it

Contract: :func:`decode` returns the state only when every check passes: the magic, the
version, the sizes (the blob is exactly as long as its header says), the crc32 and the
compatibility digest. Otherwise it raises :class:`CorruptBlob` (damaged, truncated, not
ours) or :class:`IncompatibleBlob` (intact, but from another model file, engine version,
context size, KV type, block size or format version), so the caller discards it and
recomputes. :func:`read_header` checks only the fixed header, for indexing a file without
reading its state.
"""

from __future__ import annotations

import ctypes
import struct
import zlib
from typing import NamedTuple

import numpy as np

from corral.worker.seq_state import SeqState

MAGIC = b"CORRALKV"
VERSION = 1
COMPAT_BYTES = 16
HEADER = struct.Struct("<8sHH16sIQ")
_CRC = struct.Struct("<I")
_TOKEN = np.dtype("<i4")
#: Sanity bounds: no context holds more tokens; no state is larger.
MAX_TOKENS = 1 << 24
MAX_STATE_BYTES = 1 << 40


class BlobError(ValueError):
    """A stored state that must not be loaded; ``kind`` names why, for metrics."""

    kind = "corrupt"


class CorruptBlob(BlobError):
    """Damaged, truncated, or not a corral KV state at all."""

    kind = "corrupt"


class IncompatibleBlob(BlobError):
    """Intact, but written by a setup whose states this one cannot load."""

    kind = "incompatible"


class Header(NamedTuple):
    compat: bytes
    n_tokens: int
    state_bytes: int

    @property
    def tokens_bytes(self) -> int:
        return self.n_tokens * _TOKEN.itemsize

    @property
    def total_bytes(self) -> int:
        """The whole blob's size: header, tokens, state and crc."""
        return HEADER.size + self.tokens_bytes + self.state_bytes + _CRC.size


def encoded_size(state: SeqState) -> int:
    """The size :func:`encode` will return for ``state``."""
    return Header(b"", len(state.tokens), len(state.data)).total_bytes


def encode(state: SeqState, compat: bytes) -> bytes:
    """``state`` as one blob, stamped with ``compat`` (16 bytes)."""
    if len(compat) != COMPAT_BYTES:
        raise ValueError(f"a compatibility digest has {COMPAT_BYTES} bytes, not {len(compat)}")
    tokens = np.ascontiguousarray(state.tokens, dtype=_TOKEN).tobytes()
    data = memoryview(state.data).cast("B")
    header = HEADER.pack(MAGIC, VERSION, 0, compat, len(state.tokens), len(data))
    crc = zlib.crc32(data, zlib.crc32(tokens, zlib.crc32(header)))
    return b"".join((header, tokens, data, _CRC.pack(crc)))


def read_header(data: bytes | bytearray | memoryview) -> Header:
    """The fixed header at the start of ``data`` (CorruptBlob / IncompatibleBlob if wrong)."""
    if len(data) < HEADER.size:
        raise CorruptBlob(f"truncated: {len(data)} bytes, a header needs {HEADER.size}")
    magic, version, _reserved, compat, n_tokens, state_bytes = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptBlob("not a corral KV state (bad magic)")
    if version != VERSION:
        raise IncompatibleBlob(f"format version {version}; this worker reads {VERSION}")
    if not 0 < n_tokens <= MAX_TOKENS or not 0 < state_bytes <= MAX_STATE_BYTES:
        raise CorruptBlob(f"implausible sizes: {n_tokens} tokens, {state_bytes} state bytes")
    return Header(bytes(compat), n_tokens, state_bytes)


def read_tokens(header: Header, data: bytes | bytearray | memoryview) -> np.ndarray:
    """The token ids that follow the header in ``data`` (at least header + tokens long)."""
    end = HEADER.size + header.tokens_bytes
    if len(data) < end:
        raise CorruptBlob(f"truncated: {len(data)} bytes, the tokens end at {end}")
    return np.frombuffer(data, dtype=_TOKEN, count=header.n_tokens, offset=HEADER.size).astype(
        np.intc
    )


def decode(blob: bytes | bytearray | memoryview, compat: bytes) -> SeqState:
    """The state in ``blob`` if it is whole and was written for ``compat`` (see the contract)."""
    view = memoryview(blob).cast("B")
    header = read_header(view)
    if len(view) != header.total_bytes:
        raise CorruptBlob(f"truncated or padded: {len(view)} bytes, the header says {header.total_bytes}")
    (stored_crc,) = _CRC.unpack_from(view, len(view) - _CRC.size)
    if zlib.crc32(view[: -_CRC.size]) != stored_crc:
        raise CorruptBlob("checksum mismatch")
    if header.compat != compat:
        raise IncompatibleBlob("written by another model file, engine, context size or KV type")
    tokens = read_tokens(header, view)
    offset = HEADER.size + header.tokens_bytes
    data = (ctypes.c_uint8 * header.state_bytes).from_buffer_copy(view, offset)
    return SeqState(tokens, data)
