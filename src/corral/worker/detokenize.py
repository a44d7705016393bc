"""Incremental detokenization: token ids in, complete UTF-8 text out.

A token is a byte string that may end in the middle of a UTF-8 character (byte-level
BPE vocabularies split multi-byte characters, emoji and CJK across tokens). Decoding
each token on its own would emit U+FFFD replacement characters; instead the bytes of
an unfinished character are held until the token that completes it arrives.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable


class IncrementalDetokenizer:
    """Feed token ids one at a time; get back only text whose characters are complete."""

    def __init__(self, piece: Callable[[int], bytes]) -> None:
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        """The text completed by ``token`` (may be empty while a character is split)."""
        return self._decoder.decode(self._piece(token))

    def flush(self) -> str:
        """At the end: bytes of an unfinished character, as U+FFFD."""
        return self._decoder.decode(b"", final=True)
