"""Per-tier counters, safe to bump from the engine thread and the writer thread at once.

Errors are counted by kind and logged once per streak: the first error of a kind is a
warning, repeats are debug lines until :meth:`TierCounters.recovered` ends the streak (a
write that works again, Redis answering again), so an outage is one line, not one per
request. Kinds: ``corrupt`` and ``incompatible`` (a stored state was discarded),
``rejected`` (llama.cpp refused a state), ``unavailable`` (Redis down or too slow),
``write`` / ``read`` (an I/O error), ``dropped`` (the writer's queue was full).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class TierStats(NamedTuple):
    """A snapshot of one tier: what it holds and what the engine did with it."""

    tier: str
    #: Prompts whose prefix was loaded from this tier, and the prompt tokens that saved.
    hits: int = 0
    hit_tokens: int = 0
    #: Lookups in this tier that found nothing better than what the faster tiers had.
    misses: int = 0
    #: States written to this tier, and states it dropped to stay within its bound.
    stored: int = 0
    evicted: int = 0
    entries: int = 0
    nbytes: int = 0
    errors: Mapping[str, int] = MappingProxyType({})

    def to_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "errors": dict(self.errors)}


class TierCounters:
    """The counters of one tier (thread-safe)."""

    def __init__(self, tier: str) -> None:
        self.tier = tier
        self._lock = threading.Lock()
        self._hits = self._hit_tokens = self._misses = self._stored = self._evicted = 0
        self._errors: dict[str, int] = {}
        self._streaks: set[str] = set()

    def hit(self, tokens: int) -> None:
        with self._lock:
            self._hits += 1
            self._hit_tokens += tokens

    def miss(self) -> None:
        with self._lock:
            self._misses += 1

    def stored(self) -> None:
        with self._lock:
            self._stored += 1

    def evicted(self, count: int) -> None:
        with self._lock:
            self._evicted += count

    def error(self, kind: str, message: str, *args: object) -> None:
        """Count an error of ``kind``; log it if it starts a streak (see the module docstring)."""
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1
            first = kind not in self._streaks
            self._streaks.add(kind)
        level = logging.WARNING if first else logging.DEBUG
        logger.log(level, f"KV {self.tier} tier: {message}", *args)

    def recovered(self, kind: str, message: str | None = None) -> None:
        """End a streak of ``kind`` errors (logging ``message`` if there was one)."""
        with self._lock:
            if kind not in self._streaks:
                return
            self._streaks.discard(kind)
        if message:
            logger.warning("KV %s tier: %s", self.tier, message)

    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    def snapshot(self, *, entries: int, nbytes: int) -> TierStats:
        with self._lock:
            return TierStats(
                self.tier,
                hits=self._hits,
                hit_tokens=self._hit_tokens,
                misses=self._misses,
                stored=self._stored,
                evicted=self._evicted,
                entries=entries,
                nbytes=nbytes,
                errors=MappingProxyType(dict(self._errors)),
            )
