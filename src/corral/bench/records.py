"""Per-request records: what the runner saw (:class:`Exchange`, raw) and what it means
(:class:`RequestResult`, parsed after the run).

The runner stores only ``(perf_counter(), bytes)`` per socket read. Parsing happens here,
afterwards: reads are split into SSE events (corral.protocol.sse.FrameSplitter); an event
carries the timestamp of the read that completed it. As in `vllm bench serve`, a *chunk* is
an event whose ``choices`` list is non-empty (its text may be empty: a role-only first delta,
a special token, a final ``finish_reason`` frame); ``usage`` may come on any event, usually a
last one with ``choices: []``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import orjson

from corral.protocol.sse import FrameSplitter


@dataclass(slots=True)
class Exchange:
    """One request as the runner recorded it: times in ``time.perf_counter()`` seconds."""

    conversation: int
    round: int
    #: When the request was ready to go (its arrival); start_s - scheduled_s is client queueing.
    scheduled_s: float
    output_len: int
    #: Prompt tokens known before sending (single-turn datasets), else None.
    prompt_len: int | None = None
    #: The prompt as text, kept only when prompt_len is None (counted after the run if needed).
    prompt_text: str | None = None
    start_s: float = 0.0
    end_s: float = 0.0
    status: int | None = None
    reads: list[tuple[float, bytes]] = field(default_factory=list)
    #: Transport failure kind (timeout, connect, disconnected, client_error) and its message.
    error: str | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True)
class RequestResult:
    """A parsed request. Chunk times are absolute; derived latencies are properties."""

    success: bool
    start_s: float
    scheduled_s: float
    chunk_times_s: tuple[float, ...] = ()
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    #: usage (server's usage.completion_tokens), tokenize (server /tokenize of the text),
    #: chunks (number of chunks with text: the estimate when neither is available).
    output_tokens_source: str | None = None
    usage_prompt_tokens: int | None = None
    requested_output_len: int = 0
    error: str | None = None
    error_detail: str | None = None
    text: str = ""
    conversation: int = 0
    round: int = 0
    end_s: float | None = None
    #: Times of the chunks that carried text (a chat stream's role-only chunk does not).
    text_times_s: tuple[float, ...] = ()

    @property
    def ttft_s(self) -> float | None:
        return self.chunk_times_s[0] - self.start_s if self.chunk_times_s else None

    @property
    def latency_s(self) -> float | None:
        """E2EL: the last chunk's time minus the start."""
        return self.chunk_times_s[-1] - self.start_s if self.chunk_times_s else None

    @property
    def itl_s(self) -> list[float]:
        times = self.chunk_times_s
        return [b - a for a, b in pairwise(times)]

    @property
    def ttst_s(self) -> float | None:
        """Time to second token: from the first chunk with text to the second."""
        times = self.text_times_s
        return times[1] - times[0] if len(times) > 1 else None

    @property
    def queue_s(self) -> float:
        return self.start_s - self.scheduled_s


def parse_exchange(ex: Exchange) -> RequestResult:
    """Everything the metrics need from one exchange; never raises on bad server output."""
    base: dict[str, Any] = {
        "start_s": ex.start_s,
        "scheduled_s": ex.scheduled_s,
        "requested_output_len": ex.output_len,
        "conversation": ex.conversation,
        "round": ex.round,
        "end_s": ex.end_s,
        "prompt_tokens": ex.prompt_len,
    }
    if ex.status is not None and ex.status != 200:
        body = b"".join(data for _, data in ex.reads)
        return RequestResult(False, error=f"http_{ex.status}", error_detail=_error_message(body), **base)
    stream = _parse_stream(ex.reads)
    error, detail = ex.error, ex.error_detail
    if error is None:
        error, detail = stream.error, stream.error_detail
    if error is None and not stream.chunk_times:
        error, detail = "no_content", "the stream ended without a chunk with choices"
    usage = stream.usage
    completion = usage.get("completion_tokens")
    prompt = usage.get("prompt_tokens")
    has_usage = isinstance(completion, int)
    if base["prompt_tokens"] is None and isinstance(prompt, int):
        base["prompt_tokens"] = prompt
    return RequestResult(
        error is None,
        chunk_times_s=tuple(stream.chunk_times),
        text_times_s=tuple(stream.text_times),
        output_tokens=completion if has_usage else len(stream.text_times),
        output_tokens_source="usage" if has_usage else "chunks",
        usage_prompt_tokens=prompt if isinstance(prompt, int) else None,
        error=error,
        error_detail=detail,
        text="".join(stream.pieces),
        **base,
    )


@dataclass(slots=True)
class _Stream:
    chunk_times: list[float] = field(default_factory=list)
    text_times: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_detail: str | None = None


def _parse_stream(reads: list[tuple[float, bytes]]) -> _Stream:
    stream = _Stream()
    splitter = FrameSplitter()
    for timestamp, data in reads:
        for payload in splitter.feed(data):
            if payload == b"[DONE]":
                continue
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                stream.error, stream.error_detail = "bad_json", payload[:200].decode(errors="replace")
                return stream
            if not isinstance(event, dict):
                continue
            if "error" in event:
                stream.error, stream.error_detail = "stream_error", _error_message(payload)
                return stream
            _take_event(stream, timestamp, event)
    return stream


def _take_event(stream: _Stream, timestamp: float, event: dict[str, Any]) -> None:
    choices = event.get("choices")
    if choices and isinstance(choices, list):
        stream.chunk_times.append(timestamp)
        choice = choices[0] if isinstance(choices[0], dict) else {}
        text = choice.get("text")
        if text is None:
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(text, str) and text:
            stream.pieces.append(text)
            stream.text_times.append(timestamp)
    usage = event.get("usage")
    if isinstance(usage, dict):
        stream.usage = usage


def _error_message(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace").strip()
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return body[:200].decode(errors="replace").strip()
