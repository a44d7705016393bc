"""Rate limits: exact RPM over a sliding minute, TPM reconciled with usage, concurrency."""

from __future__ import annotations

import hashlib

import pytest
from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, started

from corral.config import LimitsConfig, parse_stack
from corral.errors import RateLimitError
from corral.router.limits import RateLimiter, reserve_tokens
from corral.router.transport.asgi_transport import ASGITransport


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_is_exact_over_a_sliding_minute() -> None:
    clock = Clock()
    limiter = RateLimiter({"a": LimitsConfig(requests_per_minute=5)}, {}, clock=clock)
    for i in range(5):
        clock.now += 1
        assert limiter.admit("a", "m", 0) is not None, i
    with pytest.raises(RateLimitError) as refused:
        limiter.admit("a", "m", 0)
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "56"  # the first request leaves the window at +60 s
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 56
    assert limiter.admit("a", "m", 0) is not None  # exactly one slot came free
    with pytest.raises(RateLimitError):
        limiter.admit("a", "m", 0)
    assert limiter.admit("other-key", "m", 0) is None  # no limit applies to it


def test_tokens_are_reserved_then_reconciled_with_usage() -> None:
    clock = Clock()
    limiter = RateLimiter({}, {"m": LimitsConfig(tokens_per_minute=1000)}, clock=clock)
    grant = limiter.admit(None, "m", 900)
    assert grant is not None
    with pytest.raises(RateLimitError, match="1000 tokens per minute"):
        limiter.admit(None, "m", 200)
    grant.release(used_tokens=100)  # the worker used far less than max_tokens
    second = limiter.admit(None, "m", 800)
    assert second is not None and dict(second.headers)[b"x-ratelimit-remaining-tokens"] == b"100"


def test_concurrency_counts_requests_in_flight() -> None:
    limiter = RateLimiter({"a": LimitsConfig(concurrent_requests=2)}, {}, clock=Clock())
    first, second = limiter.admit("a", "m", 0), limiter.admit("a", "m", 0)
    with pytest.raises(RateLimitError, match="2 concurrent requests"):
        limiter.admit("a", "m", 0)
    assert first is not None and second is not None
    first.release(None)
    assert limiter.admit("a", "m", 0) is not None


def test_a_refusal_by_one_limit_counts_against_none() -> None:
    limiter = RateLimiter({"a": LimitsConfig(requests_per_minute=10)},
                          {"m": LimitsConfig(concurrent_requests=1)}, clock=Clock())
    held = limiter.admit("a", "m", 0)
    with pytest.raises(RateLimitError, match="model 'm'"):
        limiter.admit("a", "m", 0)
    assert held is not None and dict(held.headers)[b"x-ratelimit-remaining-requests"] == b"9"
    held.release(None)
    again = limiter.admit("a", "m", 0)
    assert again is not None and dict(again.headers)[b"x-ratelimit-remaining-requests"] == b"8"


def test_reservation_estimate() -> None:
    assert reserve_tokens(b"x" * 400, 50) == 150
    assert reserve_tokens(b"x" * 400, None) == 100


async def test_the_router_answers_429_with_openai_headers() -> None:
    stack = parse_stack({
        "router": {"health_interval_s": 60, "auth": {"keys": [
            {"name": "a", "sha256": hashlib.sha256(b"sk-a").hexdigest(), "limits": {"requests_per_minute": 2}},
        ]}},
        "models": [{"name": "chat-model", "aliases": ["chat"], "task": "chat", "engine": "vllm",
                    "source": "fake", "replicas": 0, "endpoints": ["http://w1"]}],
    })
    async with started(stack, ASGITransport({"http://w1": FakeEngine("w1")})) as app:
        client = InMemoryClient(app)
        auth = [("authorization", "Bearer sk-a")]
        replies = [await client.post("/v1/chat/completions", {"model": "chat", "messages": []}, auth) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    assert replies[0].headers[b"x-ratelimit-limit-requests"] == b"2"
    assert replies[1].headers[b"x-ratelimit-remaining-requests"] == b"0"
    refused = replies[2]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers[b"retry-after"]) >= 59
