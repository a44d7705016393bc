"""Values made from texts, the recent ones kept: an LRU bounded by the keys' characters.

The router's prompt caches remember what they made from a text (a cut, a plan, a share of
a hash chain); the values are small beside the texts or share their memory, so the
texts' characters are what bounds them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TextMemo(Generic[K, V]):
    """``make(key)`` for recent keys, at most ``max_chars`` characters of keys (``chars``
    counts a key's characters; a key alone larger than the bound is made, not kept)."""

    def __init__(self, max_chars: int, chars: Callable[[K], int]) -> None:
        self._max_chars = max_chars
        self._chars_of = chars
        self.chars = 0
        self._values: OrderedDict[K, V] = OrderedDict()

    def get_or_make(self, key: K, make: Callable[[K], V]) -> V:
        values = self._values
        value = values.get(key)
        if value is not None:
            values.move_to_end(key)
            return value
        value = make(key)
        size = self._chars_of(key)
        if size <= self._max_chars:
            values[key] = value
            self.chars += size
            while self.chars > self._max_chars:
                old, _ = values.popitem(last=False)
                self.chars -= self._chars_of(old)
        return value
