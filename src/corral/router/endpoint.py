"""One worker endpoint as the router sees it: where it is, whether it is healthy, its load."""

from __future__ import annotations

from dataclasses import dataclass

from corral.router.engine_load import EngineLoad


@dataclass(slots=True, eq=False)
class Endpoint:
    """A replica of one model, reachable at ``url`` (a base URL, no trailing slash).

    ``healthy`` starts False and is set by health checks (and cleared at once by a
    connection failure). ``in_flight`` counts requests picked for it and not yet finished;
    ``queued_tokens`` the prompt tokens of those requests it has not yet answered the
    first byte of (its prefill backlog, as the router predicted it).
    Compared by identity: two discoveries of the same URL are the same object in the pool.
    """

    url: str
    model: str
    healthy: bool = False
    in_flight: int = 0
    queued_tokens: int = 0
    last_error: str | None = None
    #: Failed answers in a row (5xx, broken streams); the circuit breaker opens at a limit.
    consecutive_failures: int = 0
    #: What the engine itself reported at the last health round (vLLM's /metrics); None: unknown.
    engine_load: EngineLoad | None = None
