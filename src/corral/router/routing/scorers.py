"""Scorers: how good each candidate is for a request, in 0..1.

    LeastLoadedScorer   fewest in-flight requests (min..max spread over 1..0), plus what
                        a vLLM engine reports beyond them (router/engine_load.py)
    PrefixScorer        share of the prompt's blocks the endpoint holds (llm-d: matched / total)
    WorkScorer          least estimated work before the request's first token: its own
                        prefill less what the endpoint holds, plus the prefill queued
                        there, plus a cost per running request (Dynamo's KV router cost)
    SessionScorer       the endpoint this session was last sent to

The prefix and session scorers are also :class:`~corral.router.routing.base.PickObserver` s:
they record where a request went (the prefix index learns the prompt's blocks, or marks
them used; the session table remembers the endpoint) and the prefix scorer states what
the router predicts the picked endpoint will reuse.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from corral.prefix.index import PrefixIndex
from corral.router.endpoint import Endpoint
from corral.router.engine_load import extra_load
from corral.router.routing.base import RequestContext


def _spread(loads: Sequence[float]) -> list[float]:
    """1.0 for the lowest, falling linearly to 0.0 for the highest; all 1.0 if equal."""
    low, high = min(loads), max(loads)
    if high == low:
        return [1.0] * len(loads)
    span = high - low
    return [(high - load) / span for load in loads]


class LeastLoadedScorer:
    """1.0 for the fewest in-flight requests, falling linearly to 0.0 for the most. Where
    an engine reports its own load (vLLM's metrics), :func:`extra_load` is added."""

    def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[float]:
        return _spread([endpoint.in_flight + extra_load(endpoint) for endpoint in candidates])


class PrefixScorer:
    """Matched leading blocks / the prompt's blocks, from a :class:`PrefixIndex`; each block
    weighed by where the endpoint holds it (RAM 1.0; disk and Redis less, see
    ``RoutingWeights``), so a lower-tier hit scores below a RAM hit and above a miss.

    ``learn=True`` (approximate ``prefix`` policy): a pick stores all of the prompt's
    blocks under the picked endpoint, since it is about to compute them. ``learn=False``
    (``kv``): the workers' events say what they hold; a pick only marks the matched
    blocks as used.
    """

    def __init__(self, index: PrefixIndex, *, learn: bool) -> None:
        self._index = index
        self._learn = learn

    def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[float]:
        blocks, weighted = ctx.routing.blocks, self._weighted(ctx, candidates)
        if blocks is None or weighted is None:
            return [0.0] * len(candidates)
        total = max(blocks.total_blocks, len(blocks.hashes), 1)
        return [held / total for held in weighted]

    def held_tokens(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> list[float]:
        """The prompt tokens each candidate holds, each block weighed by its medium."""
        blocks, weighted = ctx.routing.blocks, self._weighted(ctx, candidates)
        if blocks is None or weighted is None:
            return [0.0] * len(candidates)
        prompt, tokens = float(blocks.prompt_tokens), blocks.block_tokens
        return [min(prompt, held * tokens) for held in weighted]

    def _weighted(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> list[float] | None:
        """Each candidate's leading blocks of the prompt, weighed by medium; None: no blocks."""
        blocks = ctx.routing.blocks
        if blocks is None or not blocks.hashes:
            return None
        self._matched(ctx, candidates)
        weighted = ctx.routing.weighted or {}
        return [weighted.get(endpoint.url, 0.0) for endpoint in candidates]

    def picked(self, ctx: RequestContext, endpoint: Endpoint) -> None:
        state = ctx.routing
        blocks = state.blocks
        if blocks is None:
            state.predicted_cached_tokens = None
            state.prefill_tokens = 0
            return
        matched = self._matched(ctx, [endpoint])[endpoint.url]
        predicted = min(blocks.prompt_tokens, round(matched * blocks.block_tokens))
        state.predicted_cached_tokens = predicted
        state.prefill_tokens = blocks.prompt_tokens - predicted
        if self._learn:
            self._index.store(endpoint.url, blocks.hashes)
        elif matched:
            self._index.touch(endpoint.url, blocks.hashes[:matched])

    def _matched(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> dict[str, int]:
        state = ctx.routing
        known = state.matched if state.matched is not None else {}
        weighted = state.weighted if state.weighted is not None else {}
        missing = [endpoint.url for endpoint in candidates if endpoint.url not in known]
        if missing and state.blocks is not None:
            # All candidates at once: a block one of them holds in a shared medium (Redis)
            # counts for every one of them.
            urls = [endpoint.url for endpoint in candidates]
            found = self._index.weighted(state.blocks.hashes, urls, shared_from=state.peers)
            for url, (count, weight) in zip(urls, found, strict=True):
                known[url], weighted[url] = count, weight
        state.matched, state.weighted = known, weighted
        return known


class WorkScorer:
    """The least work before the request's first token, in prompt tokens to prefill:

        work = (prompt tokens - the tokens the endpoint holds, weighed by medium)
               + the prefill already queued there + in_flight_tokens x requests running there

    scored ``(least + 1) / (work + 1)``: 1.0 for the cheapest, ties stay ties. Unlike
    summing a prefix share with min-max load scores (which caps what load can outweigh,
    whatever the gap), the terms share one unit, so a warm endpoint keeps a request as
    long as waiting there costs less than recomputing the prefix elsewhere, and no longer:
    every pick adds its prefill and one request to the endpoint's work, so a burst that
    shares one held prefix spills over once the holder's queue outweighs the prefix.
    """

    def __init__(self, prefix: PrefixScorer, *, in_flight_tokens: float) -> None:
        self._prefix = prefix
        self._in_flight_tokens = in_flight_tokens

    def work(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> list[float]:
        held = self._prefix.held_tokens(ctx, candidates)
        prompt = ctx.routing.blocks.prompt_tokens if ctx.routing.blocks is not None else 0
        per_request = self._in_flight_tokens
        return [  # held_tokens never exceeds the prompt
            prompt - held_tokens
            + endpoint.queued_tokens
            + (endpoint.in_flight + extra_load(endpoint)) * per_request
            for endpoint, held_tokens in zip(candidates, held, strict=True)
        ]

    def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[float]:
        work = self.work(ctx, candidates)
        least = min(work)
        return [(least + 1.0) / (amount + 1.0) for amount in work]


class SessionTable:
    """Session key -> the endpoint URL it was last sent to; LRU, at most ``max_sessions``."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._where: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._where)

    def get(self, key: str) -> str | None:
        return self._where.get(key)

    def put(self, key: str, url: str) -> None:
        self._where[key] = url
        self._where.move_to_end(key)
        while len(self._where) > self.max_sessions:
            self._where.popitem(last=False)


class SessionScorer:
    """1.0 for the endpoint the request's session used last: the session comes from a
    header (``x-session-id`` by default), else the request's ``user`` field."""

    def __init__(self, sessions: SessionTable, *, header: str) -> None:
        self._sessions = sessions
        self._header = header.lower()

    def key(self, ctx: RequestContext) -> str | None:
        return ctx.headers.get(self._header) or ctx.user or None

    def score(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[float]:
        key = self.key(ctx)
        url = None if key is None else self._sessions.get(f"{ctx.model}\0{key}")
        return [1.0 if endpoint.url == url else 0.0 for endpoint in candidates]

    def picked(self, ctx: RequestContext, endpoint: Endpoint) -> None:
        key = self.key(ctx)
        if key is not None:
            self._sessions.put(f"{ctx.model}\0{key}", endpoint.url)
