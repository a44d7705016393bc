"""Rate limits shared through a real redis-server: several routers, one set of limits.

Each test gets its own redis-server on a free loopback port (tests/redis_server.py); an
outage is a kill -9 of it, by PID. Windows are shortened where a test must see one pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from tests.fakes.engine import FakeEngine
from tests.redis_server import RedisServer, running_redis
from tests.router.support import InMemoryClient, started

from corral.config import LimitsConfig, RedisLimitsConfig, parse_stack
from corral.errors import OverloadedError, RateLimitError
from corral.router.limits import Admission, reserve_tokens
from corral.router.limits_redis import RedisRateLimiter
from corral.router.limits_scripts import ADMIT, CANCEL
from corral.router.transport.asgi_transport import ASGITransport

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "hello there"}]


@pytest.fixture(name="redis_server")
def _redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(server: RedisServer, *, keys: dict[str, LimitsConfig] | None = None,
            models: dict[str, LimitsConfig] | None = None, window_s: float = 60.0,
            clock: Callable[[], float] | None = None, errors: list[str] | None = None,
            **config: object) -> RedisRateLimiter:
    return RedisRateLimiter(
        server.url, keys or {}, models or {},
        config=RedisLimitsConfig.model_validate(config),
        on_error=errors.append if errors is not None else None,
        window_s=window_s,
        **({"clock": clock} if clock is not None else {}),
    )


async def admitted(attempt: Awaitable[Admission | None]) -> Admission | RateLimitError | None:
    try:
        return await attempt
    except RateLimitError as exc:
        return exc


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition still false"
        await asyncio.sleep(0.01)


async def test_two_routers_admit_exactly_the_limit_between_them(redis_server: RedisServer) -> None:
    a = limiter(redis_server, keys={"k": LimitsConfig(requests_per_minute=10)})
    b = limiter(redis_server, keys={"k": LimitsConfig(requests_per_minute=10)})
    try:
        outcomes = await asyncio.gather(
            *(admitted((a if i % 2 else b).acquire("k", "m", 0)) for i in range(25))
        )
        grants = [o for o in outcomes if o is not None and not isinstance(o, RateLimitError)]
        refusals = [o for o in outcomes if isinstance(o, RateLimitError)]
        assert len(grants) == 10 and len(refusals) == 15
        remaining = sorted(int(dict(g.headers)[b"x-ratelimit-remaining-requests"]) for g in grants)
        assert remaining == list(range(10))  # each admission saw every earlier one, from either router
        assert refusals[0].status == 429 and refusals[0].headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(refusals[0].headers["Retry-After"]) <= 60
        assert "10 requests per minute" in refusals[0].message
        assert await a.acquire("other", "m", 0) is None  # no limit applies to it
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_minute_slides(redis_server: RedisServer) -> None:
    a = limiter(redis_server, keys={"k": LimitsConfig(requests_per_minute=3)}, window_s=1.0)
    try:
        for _ in range(3):
            assert await a.acquire("k", "m", 0) is not None
        with pytest.raises(RateLimitError):
            await a.acquire("k", "m", 0)
        await asyncio.sleep(1.1)
        for _ in range(3):
            assert await a.acquire("k", "m", 0) is not None
        with pytest.raises(RateLimitError):
            await a.acquire("k", "m", 0)
    finally:
        await a.aclose()


async def test_tokens_are_reserved_then_reconciled_across_routers(redis_server: RedisServer) -> None:
    models = {"m": LimitsConfig(tokens_per_minute=1000)}
    a, b = limiter(redis_server, models=models), limiter(redis_server, models=models)
    try:
        grant = await a.acquire(None, "m", 900)
        assert grant is not None and dict(grant.headers)[b"x-ratelimit-remaining-tokens"] == b"100"
        with pytest.raises(RateLimitError, match="1000 tokens per minute"):
            await b.acquire(None, "m", 200)
        grant.release(used_tokens=100)  # the worker used far less than max_tokens

        async def fits() -> bool:
            try:
                second = await b.acquire(None, "m", 800)
            except RateLimitError:
                return False
            assert second is not None and dict(second.headers)[b"x-ratelimit-remaining-tokens"] == b"100"
            return True

        await until(fits)
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_refusal_by_one_limit_counts_against_none(redis_server: RedisServer) -> None:
    a = limiter(redis_server, keys={"k": LimitsConfig(requests_per_minute=10)},
                models={"m": LimitsConfig(concurrent_requests=1)})
    try:
        held = await a.acquire("k", "m", 0)
        with pytest.raises(RateLimitError, match="model 'm'"):
            await a.acquire("k", "m", 0)
        assert held is not None and dict(held.headers)[b"x-ratelimit-remaining-requests"] == b"9"
        held.release(None)

        async def again() -> bool:
            try:
                grant = await a.acquire("k", "m", 0)
            except RateLimitError:
                return False
            assert grant is not None and dict(grant.headers)[b"x-ratelimit-remaining-requests"] == b"8"
            return True

        await until(again)
    finally:
        await a.aclose()


async def test_concurrency_slots_of_a_dead_router_expire_live_ones_are_renewed(
    redis_server: RedisServer,
) -> None:
    models = {"m": LimitsConfig(concurrent_requests=1)}
    live = limiter(redis_server, models=models, lease_ttl_s=0.6)
    other = limiter(redis_server, models=models, lease_ttl_s=0.6)
    dead = limiter(redis_server, models=models, lease_ttl_s=0.6)
    try:
        held = await live.acquire(None, "m", 0)
        assert held is not None
        await asyncio.sleep(2.0)  # over three lease lengths: only renewal keeps it
        with pytest.raises(RateLimitError, match="1 concurrent requests"):
            await other.acquire(None, "m", 0)
        held.release(None)
        await until(lambda: _admits(other))  # released: the slot is free at once

        redis = aioredis.Redis.from_url(redis_server.url)
        await redis.delete("corral:limits:model:m:lease")
        await redis.aclose()
        assert await dead.acquire(None, "m", 0) is not None
        await dead.aclose()  # the router dies holding the slot: nothing renews it
        with pytest.raises(RateLimitError):
            await other.acquire(None, "m", 0)
        await until(lambda: _admits(other), timeout_s=3.0)  # its lease ran out
    finally:
        await live.aclose()
        await other.aclose()


async def _admits(limits: RedisRateLimiter) -> bool:
    try:
        grant = await limits.acquire(None, "m", 0)
    except RateLimitError:
        return False
    assert grant is not None
    grant.release(None)
    return True


async def test_redis_outage_local_counts_alone_logs_once_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock, errors = Clock(), []
    keys = {"k": LimitsConfig(requests_per_minute=2)}
    a = limiter(redis_server, keys=keys, clock=clock, errors=errors, retry_s=1.0)
    b = limiter(redis_server, keys=keys)
    try:
        assert await a.acquire("k", "m", 0) is not None  # counted in Redis
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="corral.router.limits_redis"):
            assert await a.acquire("k", "m", 0) is not None  # local: this router's own count
            assert await a.acquire("k", "m", 0) is not None
            with pytest.raises(RateLimitError):
                await a.acquire("k", "m", 0)  # the local limit still holds
        assert errors == ["local"] * 3
        assert len([r for r in caplog.records if "cannot be reached" in r.message]) == 1
        redis_server.start()  # back, empty
        with pytest.raises(RateLimitError):
            await a.acquire("k", "m", 0)  # within retry_s Redis is left alone: still local (and full)
        assert errors == ["local"] * 4
        clock.now += 1.5
        grant = await a.acquire("k", "m", 0)
        assert grant is not None and dict(grant.headers)[b"x-ratelimit-remaining-requests"] == b"1"
        second = await b.acquire("k", "m", 0)  # shared again: b sees a's request
        assert second is not None and dict(second.headers)[b"x-ratelimit-remaining-requests"] == b"0"
    finally:
        await a.aclose()
        await b.aclose()


async def test_an_admission_answered_too_late_holds_no_lease_or_tokens_once_redis_answers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []
    models = {"m": LimitsConfig(tokens_per_minute=1000, concurrent_requests=5)}
    a = limiter(redis_server, models=models, errors=errors, timeout_s=0.2, retry_s=0.2)
    redis = aioredis.Redis.from_url(redis_server.url)
    pid = redis_server.pid
    assert pid is not None
    try:
        held = await a.acquire(None, "m", 100)  # counted in Redis; its connection stays pooled
        assert held is not None
        caplog.set_level(logging.DEBUG, logger="corral.router.limits_redis")
        os.kill(pid, signal.SIGSTOP)  # the next ADMIT reaches Redis, which answers too late
        try:
            late = await a.acquire(None, "m", 300)
            await asyncio.sleep(0.3)  # the cancel's first try (0.2 s) meets the stopped Redis too
        finally:
            os.kill(pid, signal.SIGCONT)
        assert late is not None and errors == ["local"]  # decided without Redis

        async def cancelled() -> bool:
            return bool([k async for k in redis.scan_iter("corral:limits:cancelled:*")])

        await until(cancelled)  # the cancel ran; the late ADMIT ran before it, or adds nothing after
        assert await redis.zcard("corral:limits:model:m:lease") == 1  # only the first request's
        assert await redis.get("corral:limits:model:m:sum") == b"100"
        assert len(await redis.hkeys("corral:limits:model:m:amt")) == 1
        assert await redis.zcard("corral:limits:model:m:tok") == 1
        assert "cancelling" in caplog.text  # its first try failed (logged at debug); a retry did it
    finally:
        await redis.aclose()
        await a.aclose()


async def test_an_admit_that_runs_after_its_cancel_adds_nothing(redis_server: RedisServer) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    bucket = [f"corral:limits:model:m:{name}" for name in ("req", "tok", "amt", "sum", "lease")]
    keys = [*bucket, "corral:limits:cancelled:r1"]
    admit_args = [60_000_000, 30_000_000, 65_000, "r1", 300, 10, 1000, 5]  # rpm, tpm, concurrency
    try:
        assert await redis.register_script(CANCEL)(keys=keys, args=["r1", 65_000]) == 1
        assert await redis.register_script(ADMIT)(keys=keys, args=admit_args) == [-1]
        assert [await redis.exists(key) for key in bucket] == [0] * 5
        assert 0 < await redis.pttl(keys[-1]) <= 65_000
    finally:
        await redis.aclose()


async def test_redis_outage_open_or_closed(redis_server: RedisServer) -> None:
    errors: list[str] = []
    keys = {"k": LimitsConfig(requests_per_minute=1)}
    opened = limiter(redis_server, keys=keys, on_error="open", errors=errors)
    closed = limiter(redis_server, keys=keys, on_error="closed", errors=errors)
    redis_server.stop()
    try:
        assert [await opened.acquire("k", "m", 0) for _ in range(3)] == [None, None, None]
        with pytest.raises(OverloadedError) as refused:
            await closed.acquire("k", "m", 0)
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
        assert errors == ["open"] * 3 + ["closed"]
    finally:
        await opened.aclose()
        await closed.aclose()


def _stack(url: str, **router: object):
    return parse_stack({
        "router": {"health_interval_s": 60, "shared_limits": True, **router},
        "redis": {"url": url},
        "models": [{"name": "chat-model", "aliases": ["chat"], "task": "chat", "engine": "vllm",
                    "source": "fake", "replicas": 0, "endpoints": ["http://w1"]}],
    })


async def test_two_router_apps_share_one_limit_and_reconcile_tokens(redis_server: RedisServer) -> None:
    stack = _stack(redis_server.url, model_limits={"chat": {"requests_per_minute": 5, "tokens_per_minute": 100}})
    network = ASGITransport({"http://w1": FakeEngine("w1")})
    body = {"model": "chat", "messages": CHAT, "max_tokens": 10}
    async with started(stack, network) as first, started(stack, network) as second:
        clients = [InMemoryClient(first), InMemoryClient(second)]
        reply = await clients[0].post("/v1/chat/completions", body)
        assert reply.status == 200
        reserved = reserve_tokens(orjson.dumps(body), 10)  # body bytes / 4 + max_tokens
        assert reply.headers[b"x-ratelimit-remaining-tokens"] == str(100 - reserved).encode()
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            async def reconciled() -> bool:  # usage: 2 prompt words + 10 tokens
                return await redis.get("corral:limits:model:chat-model:sum") == b"12"

            await until(reconciled)
        finally:
            await redis.aclose()
        replies = [await clients[i % 2].post("/v1/chat/completions", {**body, "max_tokens": 1}) for i in range(8)]
    statuses = [r.status for r in replies]
    assert statuses == [200] * 4 + [429] * 4  # 5 per minute across both routers
    assert replies[0].headers[b"x-ratelimit-remaining-requests"] == b"3"
    # the first request counts its usage (12), the second its reservation
    second_reserve = reserve_tokens(orjson.dumps({**body, "max_tokens": 1}), 1)
    assert replies[0].headers[b"x-ratelimit-remaining-tokens"] == str(100 - 12 - second_reserve).encode()
    assert replies[-1].json()["error"]["code"] == "rate_limit_exceeded"
    assert replies[-1].headers[b"x-ratelimit-remaining-requests"] == b"0"


async def test_router_app_during_an_outage_counts_it(redis_server: RedisServer) -> None:
    stack = _stack(redis_server.url, model_limits={"chat": {"requests_per_minute": 2}})
    async with started(stack, ASGITransport({"http://w1": FakeEngine("w1")})) as app:
        client = InMemoryClient(app)
        redis_server.stop()
        replies = [await client.post("/v1/chat/completions", {"model": "chat", "messages": CHAT}) for _ in range(3)]
        assert [r.status for r in replies] == [200, 200, 429]
        assert app.metrics.registry.get_sample_value(
            "corral_router_shared_limits_errors_total", {"action": "local"}
        ) == 3


def test_shared_limits_need_a_redis_url() -> None:
    from corral.errors import ConfigError
    from corral.router import create_app

    stack = parse_stack({
        "router": {"shared_limits": True},
        "models": [{"name": "m", "task": "chat", "engine": "vllm", "source": "x", "replicas": 0,
                    "endpoints": ["http://w1"]}],
    })
    with pytest.raises(ConfigError, match=r"redis\.url"):
        create_app(stack)
