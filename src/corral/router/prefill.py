"""Disaggregated prefill: a model's prompt is computed by a prefill worker, its answer by another.

    client ──> router ──(1) the request, max_tokens 1, not streamed ──> prefill worker
                  │                         it prefills, stores the prompt's KV in the
                  │                         shared tier (Redis), then answers
                  └────(2) the original request ─────────────────────> decode worker
                                            it loads that KV, prefills only the rest and
                                            generates; its response goes to the client

Prefill is compute-bound and decode is memory-bound; with their own workers a long prompt
no longer stalls the short chats decoding next to it (the seed's disaggregated prefilling;
vLLM's disaggregated-prefill proxy and LMCache's producer/consumer roles do the same, which
is why step (1) is an ordinary request with ``max_tokens: 1``: a vLLM prefill instance
needs nothing else).

Step (1) is an optimization, never a failure: with no healthy prefill worker, or when it
fails or takes longer than ``router.prefill_timeout_s``, the decode worker prefills the
prompt itself (logged, counted). A prompt shorter than ``router.prefill_min_tokens`` (or
than one ``cache.chunk_tokens`` chunk: the shared tier keeps whole chunks only) skips step
(1): prefilling it where it is decoded costs less than the extra hop. The client sees one
ordinary response either way. A model has prefill workers when its stack
entry sets ``prefill_replicas`` or ``prefill_endpoints``; they form the pool
:func:`~corral.router.discovery.base.prefill_pool` of the model.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from corral.prefix.prompt import TokenPrompt, canonical_text, read_prompt
from corral.router.discovery.base import prefill_pool
from corral.router.endpoint import Endpoint
from corral.router.metering import RouterMeter
from corral.router.pool import EndpointPool
from corral.router.routing.base import RequestContext
from corral.router.routing.prepare import CHARS_PER_TOKEN
from corral.router.transport.base import ConnectError, Transport, TransportError, TransportTimeout

logger = logging.getLogger(__name__)

PrefillOutcome = Literal["ok", "failed", "no_endpoint", "short", "cancelled"]

#: Fields of a generation request that do not concern the prompt's KV: the prefill request
#: drops them (it generates one token, unstreamed).
_DROPPED = ("stream", "stream_options", "max_completion_tokens", "n", "best_of", "logprobs",
            "top_logprobs", "echo")


def prefill_body(body: dict[str, Any]) -> bytes:
    """The request a prefill worker gets: the same prompt, one token, no stream."""
    request = {name: value for name, value in body.items() if name not in _DROPPED}
    request["max_tokens"] = 1
    request["stream"] = False
    return orjson.dumps(request)


class Prefiller:
    """Runs step (1) for the models that have prefill workers."""

    def __init__(
        self,
        pool: EndpointPool,
        transport: Transport,
        meter: RouterMeter,
        *,
        models: Sequence[str],
        rng: random.Random,
        min_tokens: int,
        timeout_s: float,
    ) -> None:
        self._min_tokens = min_tokens
        self._timeout_s = timeout_s
        self._pool = pool
        self._transport = transport
        self._meter = meter
        self._models = frozenset(models)
        self._rng = rng
        self._warned: set[str] = set()

    def handles(self, model: str) -> bool:
        return model in self._models

    async def prefill(self, ctx: RequestContext, headers: Sequence[tuple[str, str]]) -> PrefillOutcome:
        """Have a prefill worker compute and store ``ctx``'s prompt (a model it :meth:`handles`);
        never raises for its failures."""
        if _prompt_tokens(ctx) < self._min_tokens:
            self._meter.prefilled(ctx.model, "short", 0.0)
            return "short"
        endpoint = self._pick(ctx.model)
        if endpoint is None:
            self._note(ctx.model, "no_endpoint", "no healthy prefill worker")
            self._meter.prefilled(ctx.model, "no_endpoint", 0.0)
            return "no_endpoint"
        started_s = self._meter.clock()
        self._pool.acquire(endpoint)
        outcome: PrefillOutcome = "failed"
        try:
            outcome = await self._send(endpoint, ctx, headers)
        except asyncio.CancelledError:
            outcome = "cancelled"  # the client left: nobody waits for this prefill any more
            raise
        finally:
            self._pool.release(endpoint)
            self._meter.prefilled(ctx.model, outcome, self._meter.clock() - started_s)
        return outcome

    def _pick(self, model: str) -> Endpoint | None:
        """The healthy prefill worker with the fewest requests in flight (ties: random)."""
        healthy = [endpoint for endpoint in self._pool.endpoints(prefill_pool(model)) if endpoint.healthy]
        if not healthy:
            return None
        fewest = min(endpoint.in_flight for endpoint in healthy)
        return self._rng.choice([endpoint for endpoint in healthy if endpoint.in_flight == fewest])

    async def _send(
        self, endpoint: Endpoint, ctx: RequestContext, headers: Sequence[tuple[str, str]]
    ) -> PrefillOutcome:
        body = prefill_body(dict(ctx.body))
        sent = [(name, value) for name, value in headers if name.lower() != "content-length"]
        try:
            async with asyncio.timeout(self._timeout_s):
                upstream = await self._transport.send(endpoint.url, ctx.path, body, sent)
                try:
                    async for _ in upstream.chunks():
                        pass
                finally:
                    await upstream.aclose()
        except ConnectError as exc:
            self._pool.eject(endpoint, exc.message)  # down: route nothing there until it is back
            self._note(ctx.model, "failed", f"{endpoint.url}: {exc.message}")
            return "failed"
        except TransportTimeout as exc:  # slow (a long prompt), not broken: no breaker count
            self._note(ctx.model, "failed", f"{endpoint.url}: {exc.message}")
            return "failed"
        except TransportError as exc:
            self._pool.answered(endpoint, ok=False, reason=exc.message)
            self._note(ctx.model, "failed", f"{endpoint.url}: {exc.message}")
            return "failed"
        except TimeoutError:
            self._note(ctx.model, "failed", f"{endpoint.url} took over {self._timeout_s:g} s")
            return "failed"
        ok = upstream.status == 200
        # A busy worker (503) is not a broken one: it costs this request its prefill only.
        if upstream.status != 503:
            self._pool.answered(endpoint, ok=upstream.status < 500, reason=f"answered {upstream.status}")
        if not ok:
            # A 4xx here (e.g. the prompt is too long) reaches the client from the decode worker.
            self._note(ctx.model, "failed", f"{endpoint.url} answered {upstream.status}")
            return "failed"
        self._warned.discard(ctx.model)
        return "ok"

    def _note(self, model: str, outcome: PrefillOutcome, detail: str) -> None:
        """Log the first fallback of a run of them (then debug), so an outage logs once."""
        level = logging.DEBUG if model in self._warned else logging.WARNING
        self._warned.add(model)
        logger.log(level, "model %s: decode workers prefill themselves (%s: %s)", model, outcome, detail)


def _prompt_tokens(ctx: RequestContext) -> float:
    """The prompt's tokens: as the policy counted them, else its characters / 4."""
    blocks = ctx.routing.blocks
    if blocks is not None:
        return blocks.prompt_tokens
    prompt = read_prompt(ctx.path, ctx.body)
    if prompt is None:
        return 0.0
    if isinstance(prompt, TokenPrompt):
        return len(prompt.tokens)
    return len(canonical_text(prompt)) / CHARS_PER_TOKEN
