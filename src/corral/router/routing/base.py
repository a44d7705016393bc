"""The routing seam, after llm-d's scheduler plugins: filters, scorers, a picker.

For one request, filters narrow the candidate endpoints (e.g. to the healthy ones),
each scorer gives every remaining candidate a score in 0..1, the scores are combined
with weights, and a picker chooses one endpoint. All of it is pure and synchronous:
no I/O, no locks, testable without a network. The proxy knows only :class:`Policy`;
new policies (prefix-aware, KV-aware) are new filters and scorers, not proxy changes.

What needs work before a pick (tokenizing and hashing the prompt) happens in the one
asynchronous step, :meth:`Policy.prepare`, which the app awaits before the proxy picks;
it leaves its results in the request's :class:`RoutingState`. Components that learn from
a pick (which endpoint got which prefix, which session) are :class:`PickObserver` s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from corral.config import Task
from corral.router.endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class PromptBlocks:
    """A prompt's leading block hashes, as a policy's ``prepare`` computed them.

    ``hashes`` may stop before the prompt's end: at the first block no endpoint holds
    (nothing after it can match). ``block_tokens`` is how many prompt tokens one block
    stands for (exact for token blocks, an estimate for text blocks); ``total_blocks``
    and ``prompt_tokens`` cover the whole prompt (estimates where it was not all read).
    """

    hashes: Sequence[int]
    block_tokens: float
    total_blocks: float
    prompt_tokens: int


@dataclass(slots=True)
class RoutingState:
    """What routing learns about one request on its way (mutable, one per request).

    ``blocks`` is set by ``prepare``; ``matched`` (endpoint url -> leading blocks it
    can serve) and ``weighted`` (the same blocks weighed by medium) by the prefix scorer; after each pick, ``predicted_cached_tokens`` (None when
    the policy predicts nothing) and ``prefill_tokens`` (the prompt tokens the picked
    endpoint still has to compute, counted against it until its first byte) describe the
    endpoint just picked. ``response_headers`` are added to the client's response (rate
    limit headers); ``used_tokens`` is set by the proxy from the response's ``usage``.
    """

    blocks: PromptBlocks | None = None
    matched: dict[str, int] | None = None
    weighted: dict[str, float] | None = None
    #: Every endpoint of the model, in all its pools (healthy or not): where a block in a
    #: shared medium (Redis) may have been reported from. None: the candidates.
    peers: Sequence[str] | None = None
    #: The prompt rendered and cut into pieces (corral.prefix.segments.Plan) by the
    #: prompt-length check, when it made one with this model's tokenizer.
    plan: Any = None
    predicted_cached_tokens: int | None = None
    prefill_tokens: int = 0
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    used_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a policy may know about a request.

    ``model`` is the model's canonical name (aliases resolved); ``body`` is the parsed
    request (treat it as read-only: the bytes sent upstream are the original ones);
    ``headers`` has lower-case names; ``routing`` is the per-request scratch space of
    the policy.
    """

    model: str
    task: Task
    path: str
    body: Mapping[str, Any]
    user: str | None
    headers: Mapping[str, str]
    routing: RoutingState = field(default_factory=RoutingState)


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


class PickObserver(Protocol):
    """Told of every pick (a prefix index learns where a prompt went, a session table
    where a session is)."""

    def picked(self, ctx: RequestContext, endpoint: Endpoint) -> None: ...


class Preparer(Protocol):
    """Per-request work before picking (tokenize, hash); fills ``ctx.routing``. Never
    raises for a request it cannot read: it leaves ``ctx.routing`` as it is."""

    async def prepare(self, ctx: RequestContext) -> None: ...


class Policy(Protocol):
    """What the app and proxy call: ``prepare`` once per request, then ``pick`` (again on
    a retry), which returns the endpoint for this request, or None if none is eligible."""

    name: str

    async def prepare(self, ctx: RequestContext) -> None: ...

    def pick(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Endpoint | None: ...
