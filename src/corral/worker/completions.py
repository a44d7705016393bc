"""POST /v1/chat/completions and /v1/completions, on a TextEngine.

Everything that can fail before generation starts (validation, model, task,
context length, a full queue) is raised before the response starts, so it becomes a
JSON error with the right status. Once a stream has started, an error becomes an SSE
error frame and the stream ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import Response

from corral.errors import APIError, ContextLengthError, OverloadedError
from corral.protocol import sse
from corral.worker.chunks import Head, Kind, chunk, completion, role_chunk, usage_chunk
from corral.worker.engine import TextEngine
from corral.worker.metering import Meter, MeteredStream
from corral.worker.schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest
from corral.worker.served import CLIENT_CLOSED, ServedModel, json_response, read_body
from corral.worker.streaming import EventStreamResponse, unless_disconnected
from corral.worker.streams import TokenStream

logger = logging.getLogger(__name__)


class CompletionEndpoints:
    """The two generation endpoints of one served text model."""

    def __init__(self, served: ServedModel, engine: TextEngine, meter: Meter) -> None:
        self._served = served
        self._engine = engine
        self._meter = meter

    async def chat(self, request: Request) -> Response:
        body = await read_body(request, ChatCompletionRequest)
        body.check_supported()
        self._served.admit(body.model, "/v1/chat/completions")
        prompt_tokens = await self._engine.tokenize(body.prompt())
        return await self._respond(request, body, prompt_tokens, "chat")

    async def text(self, request: Request) -> Response:
        body = await read_body(request, CompletionRequest)
        body.check_supported()
        self._served.admit(body.model, "/v1/completions")
        prompt_tokens = await self._engine.tokenize(body.single_prompt())
        try:
            return await self._respond(request, body, prompt_tokens, "text")
        except ContextLengthError as exc:
            exc.param = "prompt"  # the error names 'messages' by default
            raise

    async def _respond(
        self, request: Request, body: SamplingRequest, prompt_tokens: list[int], kind: Kind
    ) -> Response:
        started_s = time.perf_counter()
        try:
            raw = self._engine.generate(prompt_tokens, body.sampling_params())
        except OverloadedError:
            self._meter.rejected()
            raise
        stream = self._meter.wrap(raw, started_s)
        head = Head.new(self._served.name, kind)
        if body.stream:
            frames = _frames(stream, head, include_usage=body.include_usage)
            return EventStreamResponse(frames, on_close=stream.cancel)
        text = await unless_disconnected(request.receive, _collect(stream))
        if text is None:
            return Response(status_code=CLIENT_CLOSED)
        return json_response(completion(head, text, stream.finish_reason, stream.usage))


async def _collect(stream: TokenStream | MeteredStream) -> str:
    try:
        return "".join([text async for text in stream])
    finally:
        stream.cancel()  # no-op once the stream ended; stops generation otherwise


async def _frames(
    stream: TokenStream | MeteredStream, head: Head, *, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    # The role chunk goes out with the first token, not before the prefill: clients and
    # benchmarks (vLLM's among them) take the first chunk with choices as the first token.
    role_pending = head.kind == "chat"
    try:
        async for text in stream:
            if role_pending:
                role_pending = False
                yield sse.encode(role_chunk(head))
            yield sse.encode(chunk(head, text))
    except APIError as exc:
        yield sse.error_frame(exc)
        return
    except Exception:
        logger.exception("stream failed on %s", head.model)
        yield sse.error_frame(APIError("internal error while generating"))
        return
    if stream.cancelled:
        return
    if role_pending:
        yield sse.encode(role_chunk(head))
    yield sse.encode(chunk(head, None, stream.finish_reason))
    if include_usage:
        yield sse.encode(usage_chunk(head, stream.usage))
    yield sse.DONE
