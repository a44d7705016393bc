"""Policies by name, as ``RoutingConfig.policy`` names them.

A new policy is one factory here plus its name in ``corral.config.RoutingPolicyName``;
the proxy does not change.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from types import MappingProxyType

from corral.errors import ConfigError
from corral.router.routing.base import Policy
from corral.router.routing.filters import HealthyFilter
from corral.router.routing.pickers import MaxScorePicker, RoundRobinPicker
from corral.router.routing.policy import ComposedPolicy, WeightedScorer
from corral.router.routing.scorers import LeastLoadedScorer

PolicyFactory = Callable[[random.Random], Policy]


def round_robin(rng: random.Random) -> Policy:
    return ComposedPolicy(
        "round_robin", filters=[HealthyFilter()], scorers=[], picker=RoundRobinPicker()
    )


def least_loaded(rng: random.Random) -> Policy:
    return ComposedPolicy(
        "least_loaded",
        filters=[HealthyFilter()],
        scorers=[WeightedScorer(LeastLoadedScorer(), 1.0)],
        picker=MaxScorePicker(rng),
    )


POLICIES: Mapping[str, PolicyFactory] = MappingProxyType(
    {"round_robin": round_robin, "least_loaded": least_loaded}
)


def build_policy(name: str, *, rng: random.Random) -> Policy:
    """The policy called ``name``, with its own state (round-robin turns, ...)."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ConfigError(
            f"router.routing.policy: unknown policy '{name}' (have: {', '.join(POLICIES)})"
        )
    return factory(rng)
