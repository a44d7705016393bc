"""The routing seam, after llm-d's scheduler plugins: filters, scorers, a picker.

For one request, filters narrow the candidate endpoints (e.g. to the healthy ones),
each scorer gives every remaining candidate a score in 0..1, the scores are combined
with weights, and a picker chooses one endpoint. All of it is pure and synchronous:
no I/O, no locks, testable without a network. The proxy knows only :class:`Policy`;
new policies (prefix-aware, KV-aware) are new filters and scorers, not proxy changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from corral.config import Task
from corral.router.endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a policy may know about a request.

    ``model`` is the model's canonical name (aliases resolved); ``body`` is the parsed
    request (treat it as read-only: the bytes sent upstream are the original ones);
    ``headers`` has lower-case names.
    """

    model: str
    task: Task
    path: str
    body: Mapping[str, Any]
    user: str | None
    headers: Mapping[str, str]


class ScoredEndpoint(NamedTuple):
    endpoint: Endpoint
    score: float


class Filter(Protocol):
    """Returns the candidates still eligible (possibly none), in their original order."""

    def filter(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[Endpoint]: ...


class Scorer(Protocol):
    """Returns one score in 0..1 per candidate, in order; higher is better."""

    def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[float]: ...


class Picker(Protocol):
    """Chooses one of at least one scored candidate."""

    def pick(self, ctx: RequestContext, scored: Sequence[ScoredEndpoint]) -> Endpoint: ...


class Policy(Protocol):
    """What the proxy calls: the endpoint for this request, or None if none is eligible."""

    name: str

    def pick(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Endpoint | None: ...
