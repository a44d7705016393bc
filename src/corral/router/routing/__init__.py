"""Routing: choose a worker endpoint for a request (filters, scorers, pickers, policies)."""

from corral.router.routing.base import (
    Filter,
    Picker,
    Policy,
    RequestContext,
    ScoredEndpoint,
    Scorer,
)
from corral.router.routing.policy import ComposedPolicy, WeightedScorer
from corral.router.routing.registry import POLICIES, build_policy

__all__ = [
    "POLICIES",
    "ComposedPolicy",
    "Filter",
    "Picker",
    "Policy",
    "RequestContext",
    "ScoredEndpoint",
    "Scorer",
    "WeightedScorer",
    "build_policy",
]
