"""Routing policies: pure, synchronous, no network."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from corral.errors import ConfigError
from corral.router.endpoint import Endpoint
from corral.router.routing import ComposedPolicy, RequestContext, WeightedScorer, build_policy
from corral.router.routing.filters import HealthyFilter
from corral.router.routing.pickers import MaxScorePicker
from corral.router.routing.scorers import LeastLoadedScorer


def ctx(model: str = "m") -> RequestContext:
    return RequestContext(model, "chat", "/v1/chat/completions", {"model": model}, None, {})


def endpoints(*loads: int, model: str = "m") -> list[Endpoint]:
    return [
        Endpoint(f"http://e{i}", model, healthy=True, in_flight=load)
        for i, load in enumerate(loads)
    ]


def test_round_robin_takes_each_endpoint_in_turn() -> None:
    policy = build_policy("round_robin", rng=random.Random(0))
    pool = endpoints(0, 0, 0)
    picked = [policy.pick(ctx(), pool) for _ in range(7)]
    assert [e.url for e in picked if e] == [f"http://e{i % 3}" for i in range(7)]


def test_round_robin_keeps_a_turn_per_model() -> None:
    policy = build_policy("round_robin", rng=random.Random(0))
    a, b = endpoints(0, 0, model="a"), endpoints(0, 0, model="b")
    assert policy.pick(ctx("a"), a) is a[0]
    assert policy.pick(ctx("b"), b) is b[0]
    assert policy.pick(ctx("a"), a) is a[1]


def test_round_robin_skips_unhealthy() -> None:
    policy = build_policy("round_robin", rng=random.Random(0))
    pool = endpoints(0, 0, 0)
    pool[1].healthy = False
    urls = {policy.pick(ctx(), pool).url for _ in range(6)}  # type: ignore[union-attr]
    assert urls == {"http://e0", "http://e2"}


def test_least_loaded_picks_the_fewest_in_flight() -> None:
    policy = build_policy("least_loaded", rng=random.Random(0))
    pool = endpoints(3, 1, 2)
    assert policy.pick(ctx(), pool) is pool[1]


def test_least_loaded_breaks_ties_at_random() -> None:
    policy = build_policy("least_loaded", rng=random.Random(42))
    pool = endpoints(1, 0, 0, 5)
    counts = Counter(policy.pick(ctx(), pool).url for _ in range(400))  # type: ignore[union-attr]
    assert set(counts) == {"http://e1", "http://e2"}
    assert min(counts.values()) > 150


def test_least_loaded_is_reproducible_with_a_seeded_rng() -> None:
    pool = endpoints(0, 0, 0, 0)
    first = [build_policy("least_loaded", rng=random.Random(7)).pick(ctx(), pool) for _ in range(1)]
    again = [build_policy("least_loaded", rng=random.Random(7)).pick(ctx(), pool) for _ in range(1)]
    assert first == again


def test_least_loaded_ignores_unhealthy_even_if_idle() -> None:
    policy = build_policy("least_loaded", rng=random.Random(0))
    pool = endpoints(0, 4)
    pool[0].healthy = False
    assert policy.pick(ctx(), pool) is pool[1]


@pytest.mark.parametrize("name", ["round_robin", "least_loaded"])
def test_no_candidate_when_all_unhealthy_or_none(name: str) -> None:
    policy = build_policy(name, rng=random.Random(0))
    pool = endpoints(0, 0)
    for endpoint in pool:
        endpoint.healthy = False
    assert policy.pick(ctx(), pool) is None
    assert policy.pick(ctx(), []) is None


def test_healthy_filter_keeps_order() -> None:
    pool = endpoints(0, 0, 0)
    pool[0].healthy = False
    assert list(HealthyFilter().filter(ctx(), pool)) == pool[1:]


def test_least_loaded_scores_span_zero_to_one() -> None:
    assert list(LeastLoadedScorer().score(ctx(), endpoints(4, 0, 2))) == [0.0, 1.0, 0.5]
    assert list(LeastLoadedScorer().score(ctx(), endpoints(2, 2))) == [1.0, 1.0]


class _Prefers:
    """A scorer preferring one URL: how a prefix- or KV-aware scorer would slot in."""

    def __init__(self, url: str) -> None:
        self.url = url

    def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> list[float]:
        return [1.0 if endpoint.url == self.url else 0.0 for endpoint in candidates]


def test_weights_combine_scorers() -> None:
    pool = endpoints(0, 3)  # e0 idle, e1 busy but preferred

    def policy(weight: float) -> ComposedPolicy:
        return ComposedPolicy(
            "mixed",
            filters=[HealthyFilter()],
            scorers=[
                WeightedScorer(LeastLoadedScorer(), 1.0),
                WeightedScorer(_Prefers("http://e1"), weight),
            ],
            picker=MaxScorePicker(random.Random(0)),
        )

    assert policy(0.5).pick(ctx(), pool) is pool[0]
    assert policy(2.0).pick(ctx(), pool) is pool[1]


def test_scores_are_clamped_to_zero_one() -> None:
    class Wild:
        def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> list[float]:
            return [5.0, -3.0]

    policy = ComposedPolicy(
        "wild",
        filters=[],
        scorers=[WeightedScorer(Wild()), WeightedScorer(_Prefers("http://e1"), 1.5)],
        picker=MaxScorePicker(random.Random(0)),
    )
    assert policy.pick(ctx(), endpoints(0, 0)).url == "http://e1"  # type: ignore[union-attr]


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'fastest'"):
        build_policy("fastest", rng=random.Random(0))
