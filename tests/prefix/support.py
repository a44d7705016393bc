"""Helpers shared by the tests of the router's tokenizer."""

from __future__ import annotations

from typing import Any

from corral.prefix.tokenizer import PromptTokenizer


def record_tokenized(tokenizer: PromptTokenizer) -> list[str]:
    """The list every text the tokenizer hands to llama.cpp from now on is appended to."""
    texts: list[str] = []
    tokenize_pieces = tokenizer.tokenize_pieces

    def recording(pieces: Any, *, add_special: bool) -> Any:
        texts.extend(pieces)
        return tokenize_pieces(pieces, add_special=add_special)

    tokenizer.tokenize_pieces = recording  # type: ignore[method-assign]
    return texts
