"""Reading the sizes people type: token counts such as ``8k`` or ``128K`` or ``32768``."""

from __future__ import annotations

import re

_TOKENS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_tokens(text: str) -> int:
    """``8k`` -> 8192, ``128k`` -> 131072, ``1m`` -> 1048576, ``1500`` -> 1500 (k = 1024, the
    convention of model context sizes). Raises ValueError naming what it expected."""
    match = _TOKENS_RE.match(text)
    if match is None:
        raise ValueError(f"'{text}' is not a token count (e.g. 8192, 8k, 128k)")
    number, suffix = float(match.group(1)), match.group(2).lower()
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[suffix]
    tokens = number * scale
    if tokens < 1 or tokens != int(tokens):
        raise ValueError(f"'{text}' is not a whole, positive number of tokens")
    return int(tokens)
