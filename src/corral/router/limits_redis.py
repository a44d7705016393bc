"""Rate limits counted in Redis, so that every router replica enforces the same limits.

The same limits as :class:`~corral.router.limits.RateLimiter` (requests and tokens per
sliding minute, concurrent requests), for the same keys and models, but the counts live
in the stack's Redis and each admission is one Lua script (:mod:`corral.router.limits_scripts`),
atomic on the server:

    per bucket (a key's limits, or a model's)      corral:limits:<key|model>:<name>:
      req    sorted set   request id -> admitted at (Redis TIME, microseconds)
      tok    sorted set   request id -> admitted at;  amt: hash id -> tokens;  sum: their total
      lease  sorted set   request id -> lease expiry   (concurrency)

``admit`` drops what left the minute (and expired leases), refuses if any bucket is full
(counting against none), else adds the request to every bucket; so N routers sharing one
Redis admit exactly what one router would. Times come from Redis' clock, never a
router's. Tokens are reserved at admission and reconciled with the worker's usage by
``release``. A concurrency slot is a lease: the router renews the leases of its requests
in flight every ``lease_ttl_s / 3``; the slots of a router that died expire on their own
after ``lease_ttl_s``. Every key expires once idle, so Redis holds nothing for buckets
nobody uses. One Redis (not a cluster): a request's buckets are touched by one script.

When Redis cannot be reached (refused, or slower than ``timeout_s``), the router says so
once in its log, counts every request it decides without Redis (``on_error(action)``),
leaves Redis alone for ``retry_s``, and meanwhile does what ``on_error`` says:
``local`` counts in this process as a lone router would (fail-open, but each replica
still applies the limits), ``open`` applies none, ``closed`` refuses with 503.

An admission that timed out may still run in Redis (it was sent; the answer came late),
which would hold a reservation and a lease for a request decided without Redis. So the
router then cancels it in the background (``CANCEL``: voids it if it ran, and marks the
id so that it adds nothing if it runs later), retrying every ``retry_s`` until Redis
answers or the window and lease it could hold have passed; never on the request's path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from corral.config import LimitsConfig, RedisLimitsConfig
from corral.errors import OverloadedError, RateLimitError
from corral.router.limits import WINDOW_S, Admission, RateLimiter
from corral.router.limits_scripts import ADMIT, CANCEL, RELEASE, RENEW

logger = logging.getLogger(__name__)

KEY_PREFIX = "corral:limits"
_KEYS_PER_BUCKET = ("req", "tok", "amt", "sum", "lease")
_FAILURES = (RedisError, OSError, TimeoutError)


class _Bucket(NamedTuple):
    label: str
    prefix: str
    requests: int | None
    tokens: int | None
    concurrency: int | None

    def keys(self, *names: str) -> list[str]:
        return [f"{self.prefix}:{name}" for name in names]


class RedisGrant:
    """An admission counted in Redis; :meth:`release` hands the work to the limiter."""

    __slots__ = ("_buckets", "_id", "_limiter", "_released", "headers")

    def __init__(self, limiter: RedisRateLimiter, request_id: str, buckets: list[_Bucket],
                 headers: list[tuple[bytes, bytes]]) -> None:
        self._limiter = limiter
        self._id = request_id
        self._buckets = buckets
        self._released = False
        self.headers = headers

    def release(self, used_tokens: int | None) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self._id, self._buckets, used_tokens)


class RedisRateLimiter:
    """The :class:`~corral.router.limits.Limiter` whose counts are shared through Redis.

    ``window_s`` is the sliding window (a minute; tests shorten it). ``clock`` only times
    the pause after a failure; the limits themselves run on Redis' clock.
    """

    def __init__(
        self,
        url: str,
        key_limits: Mapping[str, LimitsConfig],
        model_limits: Mapping[str, LimitsConfig],
        *,
        config: RedisLimitsConfig,
        on_error: Callable[[str], None] | None = None,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._keys = {name: _bucket("key", name, c) for name, c in key_limits.items() if _limited(c)}
        self._models = {name: _bucket("model", name, c) for name, c in model_limits.items() if _limited(c)}
        self._local = RateLimiter(key_limits, model_limits)
        self._on_error = on_error or (lambda action: None)
        self._window_us = int(window_s * 1_000_000)
        self._cancel_tries = 1 + math.ceil(max(window_s, config.lease_ttl_s) / config.retry_s)
        self._lease_us = int(config.lease_ttl_s * 1_000_000)
        self._key_ttl_ms = str(math.ceil((max(window_s, config.lease_ttl_s) + 5) * 1000))
        self._clock = clock
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._admit_script = self._redis.register_script(ADMIT)
        self._release_script = self._redis.register_script(RELEASE)
        self._renew_script = self._redis.register_script(RENEW)
        self._cancel_script = self._redis.register_script(CANCEL)
        self._ids = (f"{secrets.token_hex(6)}:{n}" for n in itertools.count())
        self._leases: dict[str, list[str]] = {}  # request id -> its lease keys, while in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._skip_until = -math.inf
        self._reachable = True

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._models)

    async def acquire(self, key: str | None, model: str, reserve_tokens: int) -> Admission | None:
        buckets = [b for b in (self._keys.get(key) if key else None, self._models.get(model)) if b]
        if not buckets:
            return None
        if self._clock() < self._skip_until:
            return self._without_redis(key, model, reserve_tokens)
        request_id = next(self._ids)
        keys = _admit_keys(buckets, request_id)
        try:
            reply = await self._call(self._admit_script, keys,
                                     self._admit_args(request_id, reserve_tokens, buckets))
        except _FAILURES as exc:
            if isinstance(exc, (TimeoutError, RedisTimeoutError)):
                self._background(self._cancel(keys, request_id))  # it may run late
            self._failed("admit", exc)
            return self._without_redis(key, model, reserve_tokens)
        self._reached()
        if int(reply[0]) == 0:
            raise _refusal(buckets[int(reply[1])], reply, self._window_us)
        _, count, used, requests_reset, tokens_reset = (int(value) for value in reply)
        headers = _headers(buckets[0], count, used, requests_reset, tokens_reset)
        leases = [bucket.keys("lease")[0] for bucket in buckets if bucket.concurrency]
        if leases:
            self._leases[request_id] = leases
            self._start_renewing()
        return RedisGrant(self, request_id, buckets, headers)

    async def aclose(self) -> None:
        """Stop renewing, let pending releases finish (briefly), close the connections."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._config.timeout_s * 2)
        pending = set(self._tasks)  # still retrying: what they would undo expires on its own
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._redis.aclose()

    # -- without Redis ---------------------------------------------------------------

    def _without_redis(self, key: str | None, model: str, reserve_tokens: int) -> Admission | None:
        action = self._config.on_error
        self._on_error(action)
        if action == "local":
            return self._local.admit(key, model, reserve_tokens)
        if action == "closed":
            raise OverloadedError(
                "rate limits are counted in Redis, which cannot be reached right now; retry",
                retry_after_s=max(1, math.ceil(self._config.retry_s)),
            )
        return None

    def _failed(self, what: str, exc: BaseException) -> None:
        self._skip_until = self._clock() + self._config.retry_s
        if self._reachable:
            self._reachable = False
            logger.warning(
                "shared rate limits: Redis cannot be reached (%s: %s); %s until it answers",
                what, str(exc) or type(exc).__name__, _MEANING[self._config.on_error],
            )

    def _reached(self) -> None:
        if not self._reachable:
            self._reachable = True
            logger.info("shared rate limits: Redis answers again; limits are shared again")

    def _admit_args(self, request_id: str, reserve_tokens: int, buckets: list[_Bucket]) -> list[str | int]:
        args: list[str | int] = [self._window_us, self._lease_us, self._key_ttl_ms, request_id,
                                 max(0, reserve_tokens)]
        for bucket in buckets:
            args += [bucket.requests or 0, bucket.tokens or 0, bucket.concurrency or 0]
        return args

    async def _call(self, script: Any, keys: list[str], args: list[str | int]) -> Any:
        async with asyncio.timeout(self._config.timeout_s):
            return await script(keys=keys, args=args)

    # -- after admission -------------------------------------------------------------

    def _release(self, request_id: str, buckets: list[_Bucket], used_tokens: int | None) -> None:
        self._leases.pop(request_id, None)
        keys = [key for bucket in buckets for key in bucket.keys("tok", "amt", "sum", "lease")]
        args: list[str | int] = [request_id, "" if used_tokens is None else max(0, used_tokens)]
        self._background(self._send_release(keys, args))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel(self, keys: list[str], request_id: str) -> None:
        """Void the admission of ``request_id`` whose answer came too late (best effort)."""
        for attempt in range(self._cancel_tries):
            if attempt:
                await asyncio.sleep(self._config.retry_s)
            try:
                await self._call(self._cancel_script, keys, [request_id, self._key_ttl_ms])
            except _FAILURES as exc:
                logger.debug("shared rate limits: cancelling %s failed (%s: %s)",
                             request_id, type(exc).__name__, exc)
            else:
                return
        logger.debug("shared rate limits: gave up cancelling %s; its lease and tokens expire", request_id)

    async def _send_release(self, keys: list[str], args: list[str | int]) -> None:
        try:
            await self._call(self._release_script, keys, args)
        except _FAILURES as exc:  # the lease expires on its own; the reservation stays
            self._on_error("release")
            self._failed("release", exc)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every third of a lease, push back the expiry of the leases of requests in flight."""
        period_s = self._config.lease_ttl_s / 3
        while self._leases:
            await asyncio.sleep(period_s)
            pairs = [(key, rid) for rid, keys in list(self._leases.items()) for key in keys]
            if not pairs:
                continue
            try:
                await self._call(
                    self._renew_script,
                    [key for key, _ in pairs],
                    [self._lease_us, self._key_ttl_ms, *(rid for _, rid in pairs)],
                )
            except _FAILURES as exc:
                self._on_error("renew")
                self._failed("renew", exc)


_MEANING = {
    "local": "each router counts on its own",
    "open": "no rate limit applies",
    "closed": "requests under a limit are refused with 503",
}


def _limited(config: LimitsConfig) -> bool:
    return any(v is not None for v in (config.requests_per_minute, config.tokens_per_minute, config.concurrent_requests))


def _bucket(kind: str, name: str, config: LimitsConfig) -> _Bucket:
    return _Bucket(f"{kind} '{name}'", f"{KEY_PREFIX}:{kind}:{name}", config.requests_per_minute,
                   config.tokens_per_minute, config.concurrent_requests)


def _admit_keys(buckets: list[_Bucket], request_id: str) -> list[str]:
    """ADMIT's and CANCEL's keys: every bucket's, then the request's cancel mark."""
    return [*(key for bucket in buckets for key in bucket.keys(*_KEYS_PER_BUCKET)),
            f"{KEY_PREFIX}:cancelled:{request_id}"]


def _refusal(bucket: _Bucket, reply: list[Any], window_us: int) -> RateLimitError:
    what_kind = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
    wait_us, count, used, requests_reset, tokens_reset = (int(value) for value in reply[3:8])
    what = {
        "requests": f"{bucket.requests} requests per minute",
        "tokens": f"{bucket.tokens} tokens per minute",
        "concurrent": f"{bucket.concurrency} concurrent requests",
    }[what_kind]
    headers = {k.decode(): v.decode() for k, v in _headers(bucket, count, used, requests_reset, tokens_reset)}
    headers["Retry-After"] = str(max(1, math.ceil(wait_us / 1_000_000)))
    return RateLimitError(
        f"rate limit of {bucket.label} reached: {what}; retry after {headers['Retry-After']} s", headers
    )


def _headers(bucket: _Bucket, requests: int, tokens: int, requests_reset_us: int,
             tokens_reset_us: int) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers, as :mod:`corral.router.limits` writes them."""
    headers: list[tuple[bytes, bytes]] = []
    for kind, limit, used, reset_us in (("requests", bucket.requests, requests, requests_reset_us),
                                        ("tokens", bucket.tokens, tokens, tokens_reset_us)):
        if limit is not None:
            headers += [
                (f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, limit - used)).encode()),
                (f"x-ratelimit-reset-{kind}".encode(), f"{reset_us / 1_000_000:.0f}s".encode()),
            ]
    return headers
