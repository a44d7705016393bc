"""How long a model's answers run: what a request still running on an endpoint costs a
newcomer there (the ``prefix`` and ``kv`` policies' work estimate).

A moving mean, per model, of the ``usage.completion_tokens`` its answers report, read from
the last bytes of each response the router predicted reuse for (a ResponseObserver, beside
the self-check). Until a model has answered, :data:`FIRST_GUESS_TOKENS`.
"""

from __future__ import annotations

from corral.protocol.fields import last_int_field
from corral.router.endpoint import Endpoint
from corral.router.routing.base import RequestContext

#: Completion tokens assumed for a model no answer has been read from.
FIRST_GUESS_TOKENS = 128.0
_FIELD = b'"completion_tokens"'


class AnswerLengths:
    """Per model, the exponentially weighted mean of reported completion tokens."""

    def __init__(self, *, smoothing: float = 0.1, first_guess: float = FIRST_GUESS_TOKENS) -> None:
        self._smoothing = smoothing
        self._first_guess = first_guess
        self._means: dict[str, float] = {}

    def mean(self, model: str) -> float:
        return self._means.get(model, self._first_guess)

    def add(self, model: str, tokens: int) -> None:
        mean = self._means.get(model)
        self._means[model] = tokens if mean is None else mean + self._smoothing * (tokens - mean)

    def answered(self, ctx: RequestContext, endpoint: Endpoint, tail: bytes) -> None:
        tokens = last_int_field(tail, _FIELD)
        if tokens is not None and tokens >= 0:
            self.add(ctx.model, tokens)
