"""Scorers: how good each candidate is for a request, in 0..1."""

from __future__ import annotations

from collections.abc import Sequence

from corral.router.endpoint import Endpoint
from corral.router.routing.base import RequestContext


class LeastLoadedScorer:
    """1.0 for the fewest in-flight requests, falling linearly to 0.0 for the most."""

    def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[float]:
        loads = [endpoint.in_flight for endpoint in candidates]
        low, high = min(loads), max(loads)
        if high == low:
            return [1.0] * len(loads)
        span = high - low
        return [(high - load) / span for load in loads]
