"""Rate limits per API key and per model: requests/min, tokens/min, concurrent requests.

Sliding one-minute windows, exact for one router process: a request is admitted only if
every limit that applies to it (its key's, its model's) has room, and is then counted
against all of them at once. Tokens are reserved at admission (an estimate of the
prompt plus ``max_tokens``) and reconciled with the worker's ``usage`` when the response
ends. Over a limit: 429 with ``Retry-After`` and OpenAI-style ``x-ratelimit-*`` headers.
Memory is bounded by the configured keys and models and by the limits themselves.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from corral.config import LimitsConfig
from corral.errors import RateLimitError

WINDOW_S = 60.0
#: Bytes of a request body per prompt token, for the reservation before the worker counts.
BYTES_PER_TOKEN = 4


@dataclass(slots=True)
class _Entry:
    at_s: float
    amount: int


@dataclass(slots=True)
class Window:
    """Amounts added in the last minute, with their times (a sliding log)."""

    limit: int
    entries: deque[_Entry] = field(default_factory=deque)
    total: int = 0

    def expire(self, now_s: float) -> None:
        while self.entries and self.entries[0].at_s <= now_s - WINDOW_S:
            self.total -= self.entries.popleft().amount

    def fits(self, amount: int) -> bool:
        return self.total + min(amount, self.limit) <= self.limit

    def add(self, now_s: float, amount: int) -> _Entry:
        entry = _Entry(now_s, min(amount, self.limit))
        self.entries.append(entry)
        self.total += entry.amount
        return entry

    def adjust(self, entry: _Entry, amount: int) -> None:
        if entry in self.entries:  # not yet expired
            self.total += amount - entry.amount
            entry.amount = amount

    def reset_s(self, now_s: float) -> float:
        return max(0.0, self.entries[0].at_s + WINDOW_S - now_s) if self.entries else 0.0


@dataclass(slots=True)
class _Bucket:
    """The limits of one key or one model, and their live state."""

    label: str
    requests: Window | None
    tokens: Window | None
    concurrency: int | None
    in_flight: int = 0


class Grant:
    """An admitted request: its response headers, and what to do when it ends."""

    __slots__ = ("_buckets", "_token_entries", "headers")

    def __init__(self, buckets: list[_Bucket], token_entries: list[tuple[Window, _Entry]],
                 headers: list[tuple[bytes, bytes]]) -> None:
        self._buckets = buckets
        self._token_entries = token_entries
        self.headers = headers

    def release(self, used_tokens: int | None) -> None:
        """The request ended; ``used_tokens`` from the worker's usage (None: keep the reservation)."""
        for bucket in self._buckets:
            bucket.in_flight -= 1
        if used_tokens is not None:
            for window, entry in self._token_entries:
                window.adjust(entry, used_tokens)


class RateLimiter:
    """Admits or refuses requests against the limits of their key and model."""

    def __init__(self, key_limits: Mapping[str, LimitsConfig], model_limits: Mapping[str, LimitsConfig],
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = {name: _bucket(f"key '{name}'", c) for name, c in key_limits.items() if _limited(c)}
        self._models = {name: _bucket(f"model '{name}'", c) for name, c in model_limits.items() if _limited(c)}
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._models)

    def admit(self, key: str | None, model: str, reserve_tokens: int) -> Grant | None:
        """A grant, None when no limit applies, or RateLimitError (429)."""
        buckets = [b for b in (self._keys.get(key) if key else None, self._models.get(model)) if b]
        if not buckets:
            return None
        now = self._clock()
        for bucket in buckets:
            self._check(bucket, now, reserve_tokens)
        entries: list[tuple[Window, _Entry]] = []
        for bucket in buckets:
            bucket.in_flight += 1
            if bucket.requests is not None:
                bucket.requests.add(now, 1)
            if bucket.tokens is not None:
                entries.append((bucket.tokens, bucket.tokens.add(now, reserve_tokens)))
        return Grant(buckets, entries, _headers(buckets[0], now))

    def _check(self, bucket: _Bucket, now: float, reserve_tokens: int) -> None:
        full: list[tuple[str, float]] = []
        for kind, window in (("requests", bucket.requests), ("tokens", bucket.tokens)):
            if window is not None:
                window.expire(now)
                if not window.fits(1 if kind == "requests" else reserve_tokens):
                    full.append((f"{window.limit} {kind} per minute", window.reset_s(now)))
        if bucket.concurrency is not None and bucket.in_flight >= bucket.concurrency:
            full.append((f"{bucket.concurrency} concurrent requests", 1.0))
        if full:
            what, wait_s = max(full, key=lambda item: item[1])
            headers = {k.decode(): v.decode() for k, v in _headers(bucket, now)}
            headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
            raise RateLimitError(f"rate limit of {bucket.label} reached: {what}; retry after {headers['Retry-After']} s", headers)


def _limited(config: LimitsConfig) -> bool:
    return any(v is not None for v in (config.requests_per_minute, config.tokens_per_minute, config.concurrent_requests))


def _bucket(label: str, config: LimitsConfig) -> _Bucket:
    return _Bucket(
        label,
        Window(config.requests_per_minute) if config.requests_per_minute else None,
        Window(config.tokens_per_minute) if config.tokens_per_minute else None,
        config.concurrent_requests,
    )


def _headers(bucket: _Bucket, now: float) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers for the tightest bucket (the key's, else the model's)."""
    headers: list[tuple[bytes, bytes]] = []
    for kind, window in (("requests", bucket.requests), ("tokens", bucket.tokens)):
        if window is not None:
            headers += [
                (f"x-ratelimit-limit-{kind}".encode(), str(window.limit).encode()),
                (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, window.limit - window.total)).encode()),
                (f"x-ratelimit-reset-{kind}".encode(), f"{window.reset_s(now):.0f}s".encode()),
            ]
    return headers


def reserve_tokens(body: bytes, max_tokens: object) -> int:
    """What a request may cost before the worker says: prompt bytes / 4 + max_tokens."""
    completion = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
    return len(body) // BYTES_PER_TOKEN + completion
