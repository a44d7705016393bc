"""The router's self-check: the cache reuse it predicted vs what the worker reported.

For each request whose policy predicted reuse (``prefix``, ``kv``), the worker's answer
says how many prompt tokens it actually took from its cache:
``usage.prompt_tokens_details.cached_tokens`` -- in the JSON body, or in a stream's final
usage chunk (``stream_options.include_usage``). Only the last bytes of the response are
searched, for one field, without parsing the JSON. A prediction *agrees* when it is
within ``tolerance_tokens`` (a block: the worker may reuse a partial block or replay the
last token) or ``tolerance_ratio`` of the larger value; otherwise it is ``over`` (the
router expected more reuse than happened) or ``under``. Responses without the field
count as ``unknown``.

Counts are kept per model in memory; a WARNING is logged, at most once per
``warn_interval_s``, when more than ``warn_ratio`` of the last window's known outcomes
disagreed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from corral.protocol.fields import last_int_field
from corral.router.endpoint import Endpoint
from corral.router.routing.base import RequestContext

logger = logging.getLogger(__name__)

Outcome = Literal["agree", "over", "under", "unknown"]
_FIELD = b'"cached_tokens"'


def cached_tokens_in(tail: bytes) -> int | None:
    """The last ``"cached_tokens": N`` in ``tail``, or None if there is none."""
    return last_int_field(tail, _FIELD)


@dataclass(slots=True)
class ModelCheck:
    """One model's counts since the router started."""

    agree: int = 0
    over: int = 0
    under: int = 0
    unknown: int = 0
    predicted_tokens: int = 0
    actual_tokens: int = 0

    @property
    def known(self) -> int:
        return self.agree + self.over + self.under


class SelfCheck:
    """Counts agreement between predicted and reported cached tokens (a ResponseObserver)."""

    def __init__(
        self,
        *,
        tolerance_tokens: int,
        tolerance_ratio: float = 0.1,
        warn_ratio: float = 0.2,
        warn_min_samples: int = 50,
        warn_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tolerance_tokens = tolerance_tokens
        self.tolerance_ratio = tolerance_ratio
        self._warn_ratio = warn_ratio
        self._warn_min_samples = warn_min_samples
        self._warn_interval_s = warn_interval_s
        self._clock = clock
        self._next_warning_s = clock()
        self._window_known = 0
        self._window_disagree = 0
        self.models: dict[str, ModelCheck] = {}
        #: Told of every outcome (model, outcome, predicted, actual): the metrics.
        self.on_outcome: Callable[[str, Outcome, int, int | None], None] | None = None

    def answered(self, ctx: RequestContext, endpoint: Endpoint, tail: bytes) -> None:
        predicted = ctx.routing.predicted_cached_tokens
        if predicted is not None:
            self.observe(ctx.model, predicted, cached_tokens_in(tail))

    def observe(self, model: str, predicted: int, actual: int | None) -> Outcome:
        outcome = self._count(model, predicted, actual)
        if self.on_outcome is not None:
            self.on_outcome(model, outcome, predicted, actual)
        return outcome

    def _count(self, model: str, predicted: int, actual: int | None) -> Outcome:
        check = self.models.get(model)
        if check is None:
            check = self.models[model] = ModelCheck()
        if actual is None:
            check.unknown += 1
            return "unknown"
        outcome = self.classify(predicted, actual)
        check.predicted_tokens += predicted
        check.actual_tokens += actual
        if outcome == "agree":
            check.agree += 1
        elif outcome == "over":
            check.over += 1
        else:
            check.under += 1
        self._window_known += 1
        self._window_disagree += outcome != "agree"
        self._maybe_warn()
        return outcome

    def classify(self, predicted: int, actual: int | None) -> Outcome:
        if actual is None:
            return "unknown"
        slack = max(self.tolerance_tokens, self.tolerance_ratio * max(predicted, actual))
        if abs(predicted - actual) <= slack:
            return "agree"
        return "over" if predicted > actual else "under"

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {model: asdict(check) for model, check in self.models.items()}

    def _maybe_warn(self) -> None:
        if self._window_known < self._warn_min_samples:
            return
        now = self._clock()
        if now < self._next_warning_s:
            return
        ratio = self._window_disagree / self._window_known
        if ratio > self._warn_ratio:
            logger.warning(
                "prefix cache predictions drift: %d of the last %d requests disagreed with the "
                "workers' cached_tokens (%s)",
                self._window_disagree,
                self._window_known,
                ", ".join(
                    f"{model}: agree {c.agree}, over {c.over}, under {c.under}"
                    for model, c in self.models.items()
                ),
            )
            self._next_warning_s = now + self._warn_interval_s
        self._window_known = self._window_disagree = 0
