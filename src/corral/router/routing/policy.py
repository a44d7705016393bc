"""A policy composed of filters, weighted scorers and a picker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.router.endpoint import Endpoint
from corral.router.routing.base import Filter, Picker, RequestContext, ScoredEndpoint, Scorer


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float = 1.0


class ComposedPolicy:
    """Filter, then score (weighted sum of 0..1 scores, each clamped), then pick.

    With no scorers every candidate scores 0 and the picker alone decides.
    """

    def __init__(
        self,
        name: str,
        *,
        filters: Sequence[Filter],
        scorers: Sequence[WeightedScorer],
        picker: Picker,
    ) -> None:
        self.name = name
        self._filters = tuple(filters)
        self._scorers = tuple(scorers)
        self._picker = picker

    def pick(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Endpoint | None:
        for step in self._filters:
            candidates = step.filter(ctx, candidates)
            if not candidates:
                return None
        totals = [0.0] * len(candidates)
        for weighted in self._scorers:
            scores = weighted.scorer.score(ctx, candidates)
            for index, score in enumerate(scores):
                totals[index] += weighted.weight * min(1.0, max(0.0, score))
        scored = [
            ScoredEndpoint(endpoint, total)
            for endpoint, total in zip(candidates, totals, strict=True)
        ]
        return self._picker.pick(ctx, scored)
