"""Pickers: the final choice among scored candidates."""

from __future__ import annotations

import random
from collections.abc import Sequence

from corral.router.endpoint import Endpoint
from corral.router.routing.base import RequestContext, ScoredEndpoint

#: Scores closer than this are a tie.
TIE_TOLERANCE = 1e-9


class MaxScorePicker:
    """The highest score; ties are broken at random (``rng`` is injected for tests)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, ctx: RequestContext, scored: Sequence[ScoredEndpoint]) -> Endpoint:
        best = max(item.score for item in scored)
        top = [item.endpoint for item in scored if best - item.score <= TIE_TOLERANCE]
        return top[0] if len(top) == 1 else self._rng.choice(top)


class RoundRobinPicker:
    """Each model's candidates in turn, ignoring scores."""

    def __init__(self) -> None:
        self._turn: dict[str, int] = {}

    def pick(self, ctx: RequestContext, scored: Sequence[ScoredEndpoint]) -> Endpoint:
        turn = self._turn.get(ctx.model, 0)
        self._turn[ctx.model] = turn + 1
        return scored[turn % len(scored)].endpoint
