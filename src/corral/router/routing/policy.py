"""A policy composed of a preparer, filters, weighted scorers, a picker and observers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from corral.router.endpoint import Endpoint
from corral.router.routing.base import (
    Filter,
    Picker,
    PickObserver,
    Policy,
    Preparer,
    RequestContext,
    ScoredEndpoint,
    Scorer,
)


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float = 1.0


class ComposedPolicy:
    """Prepare, filter, score (weighted sum of 0..1 scores, each clamped), pick, observe.

    With no scorers every candidate scores 0 and the picker alone decides.
    """

    def __init__(
        self,
        name: str,
        *,
        filters: Sequence[Filter],
        scorers: Sequence[WeightedScorer],
        picker: Picker,
        preparer: Preparer | None = None,
        observers: Sequence[PickObserver] = (),
    ) -> None:
        self.name = name
        self._filters = tuple(filters)
        self._scorers = tuple(weighted for weighted in scorers if weighted.weight != 0)
        self._picker = picker
        self._preparer = preparer
        self._observers = tuple(observers)

    async def prepare(self, ctx: RequestContext) -> None:
        if self._preparer is not None:
            await self._preparer.prepare(ctx)

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
        endpoint = self._picker.pick(ctx, scored)
        for observer in self._observers:
            observer.picked(ctx, endpoint)
        return endpoint


class ModelPolicies:
    """One policy per model, behind the one :class:`Policy` the proxy knows."""

    def __init__(self, policies: Mapping[str, Policy], *, default: Policy | None = None) -> None:
        self._policies = dict(policies)
        self._default = default
        names = {policy.name for policy in self._policies.values()}
        if len(names) == 1:
            self.name = names.pop()
        else:
            each = (f"{model}: {policy.name}" for model, policy in sorted(self._policies.items()))
            self.name = f"per-model ({', '.join(each)})"

    def policy(self, model: str) -> Policy | None:
        return self._policies.get(model, self._default)

    async def prepare(self, ctx: RequestContext) -> None:
        policy = self.policy(ctx.model)
        if policy is not None:
            await policy.prepare(ctx)

    def pick(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Endpoint | None:
        policy = self.policy(ctx.model)
        return None if policy is None else policy.pick(ctx, candidates)
