"""Rate limits per API key and per model: requests/min, tokens/min, concurrent requests.

Sliding one-minute windows, exact for one router process: a request is admitted only if
every limit that applies to it (its key's, its model's) has room, and is then counted
against all of them at once. Tokens are reserved at admission (an estimate of the
prompt plus ``max_tokens``) and reconciled with the worker's ``usage`` when the response
ends. Over a limit: 429 with ``Retry-After`` and OpenAI-style ``x-ratelimit-*`` headers.
Memory is bounded by the configured keys and models and by the limits themselves.

Two implementations of one interface, :class:`Limiter` (``acquire`` an :class:`Admission`,
``release`` it when the response ends): :class:`RateLimiter` here counts in this process,
exact for one router; :class:`~corral.router.limits_redis.RedisRateLimiter` counts in the
stack's Redis so that several router replicas share the limits (``router.shared_limits``).
:func:`create_limiter` picks one from the stack.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from corral.config import LimitsConfig, StackConfig
from corral.errors import ConfigError, RateLimitError

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


class Admission(Protocol):
    """An admitted request: ``headers`` go on its response; ``release`` once it ended.

    ``release`` never blocks and never raises: ``used_tokens`` (the worker's usage; None
    keeps the reservation) reconciles the tokens reserved at admission."""

    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...

    def release(self, used_tokens: int | None) -> None: ...


class Limiter(Protocol):
    """Rate limits per key and per model, wherever they are counted."""

    @property
    def enabled(self) -> bool: ...

    async def acquire(self, key: str | None, model: str, reserve_tokens: int) -> Admission | None:
        """An admission, None when no limit applies, or RateLimitError (429); an
        implementation that cannot count may refuse with another APIError (503)."""
        ...

    async def aclose(self) -> None: ...


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

    async def acquire(self, key: str | None, model: str, reserve_tokens: int) -> Grant | None:
        """:meth:`admit`, as the :class:`Limiter` interface asks."""
        return self.admit(key, model, reserve_tokens)

    async def aclose(self) -> None:
        """Nothing to close: the counts live in this object."""

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


def create_limiter(stack: StackConfig, on_shared_error: Callable[[str], None] | None = None) -> Limiter:
    """The stack's limiter: in this process, or in the stack's Redis with ``router.shared_limits``.

    ``on_shared_error(action)`` is told each time the shared limiter could not reach Redis
    and what it did instead (see :class:`~corral.router.limits_redis.RedisRateLimiter`).
    """
    keys = {key.name: key.limits for key in stack.router.auth.keys}
    models = {stack.model(name).name: limits for name, limits in stack.router.model_limits.items()}
    if not stack.router.shared_limits:
        return RateLimiter(keys, models)
    if stack.redis.url is None:
        raise ConfigError(
            "router.shared_limits: the router needs redis.url, the Redis its replicas share "
            "(`corral up` fills it in when it starts redis-server)"
        )
    from corral.router.limits_redis import RedisRateLimiter  # imports redis

    return RedisRateLimiter(
        stack.redis.url, keys, models, config=stack.router.redis_limits, on_error=on_shared_error
    )
