"""The KV blob format: round trip, and every kind of damage refused with a clear error."""

from __future__ import annotations

import struct

import pytest
from tests.worker.kvstore_support import COMPAT, state

from corral.worker.kvstore.codec import (
    HEADER,
    CorruptBlob,
    IncompatibleBlob,
    decode,
    encode,
    encoded_size,
    read_header,
    read_tokens,
)


def test_a_state_survives_the_round_trip() -> None:
    original = state(list(range(40)), nbytes=5000, fill=3)
    blob = encode(original, COMPAT)
    assert len(blob) == encoded_size(original)
    back = decode(blob, COMPAT)
    assert back.tokens.tolist() == list(range(40))
    assert bytes(back.data) == bytes(original.data)
    header = read_header(blob)
    assert (header.n_tokens, header.state_bytes, header.compat) == (40, 5000, COMPAT)
    assert read_tokens(header, blob[: HEADER.size + 160]).tolist() == list(range(40))


@pytest.mark.parametrize("offset", [0, 9, 30, 50, 200, -1])
def test_any_flipped_byte_is_refused(offset: int) -> None:
    blob = bytearray(encode(state(list(range(40)), nbytes=300), COMPAT))
    blob[offset] ^= 0x40
    with pytest.raises((CorruptBlob, IncompatibleBlob)):
        decode(blob, COMPAT)


def test_a_damaged_state_is_corrupt_not_incompatible() -> None:
    blob = bytearray(encode(state(list(range(8)), nbytes=300), COMPAT))
    blob[HEADER.size + 40] ^= 1
    with pytest.raises(CorruptBlob, match="checksum"):
        decode(blob, COMPAT)


@pytest.mark.parametrize("keep", [0, 10, HEADER.size, HEADER.size + 5, -1])
def test_a_truncated_blob_is_refused(keep: int) -> None:
    blob = encode(state(list(range(8)), nbytes=300), COMPAT)
    with pytest.raises(CorruptBlob, match="truncated"):
        decode(blob[:keep], COMPAT)


def test_something_else_entirely_is_refused() -> None:
    with pytest.raises(CorruptBlob, match="magic"):
        decode(b"x" * 100, COMPAT)


def test_a_state_of_another_setup_is_incompatible() -> None:
    blob = encode(state(list(range(8))), COMPAT)
    with pytest.raises(IncompatibleBlob) as info:
        decode(blob, bytes(16))
    assert info.value.kind == "incompatible"


def test_another_format_version_is_incompatible() -> None:
    blob = bytearray(encode(state(list(range(8))), COMPAT))
    struct.pack_into("<H", blob, 8, 2)
    with pytest.raises(IncompatibleBlob, match="version 2"):
        decode(blob, COMPAT)


def test_the_digest_must_have_sixteen_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        encode(state([1, 2]), b"short")
