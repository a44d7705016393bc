"""OpenAI response bodies and stream chunks, as plain dicts (serialized with orjson).

Chat streams: a first chunk with ``delta: {"role": "assistant"}``, content deltas,
a last chunk with an empty delta and the finish reason, then (with
``stream_options.include_usage``) a chunk with no choices and the usage.
Text completion streams are the same with ``text`` instead of ``delta``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal, NamedTuple

from corral.worker.streams import FinishReason, Usage

Kind = Literal["chat", "text"]


class Head(NamedTuple):
    """What every chunk of one response repeats."""

    id: str
    created: int
    model: str
    kind: Kind

    @classmethod
    def new(cls, model: str, kind: Kind) -> Head:
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        return cls(prefix + os.urandom(12).hex(), int(time.time()), model, kind)

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion(
    head: Head, text: str, finish_reason: FinishReason | None, usage: Usage
) -> dict[str, Any]:
    """A whole (non-streamed) response."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if head.kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": head.id,
        "object": head.object,
        "created": head.created,
        "model": head.model,
        "choices": [choice],
        "usage": usage_dict(usage),
    }


def chunk(
    head: Head, text: str | None, finish_reason: FinishReason | None = None
) -> dict[str, Any]:
    """One stream chunk; for chat, ``text=None`` gives the empty delta of the last chunk."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if head.kind == "chat":
        choice["delta"] = {} if text is None else {"content": text}
    else:
        choice["text"] = text or ""
    return _chunk(head, [choice])


def role_chunk(head: Head) -> dict[str, Any]:
    """The first chunk of a chat stream."""
    delta = {"role": "assistant", "content": ""}
    return _chunk(head, [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}])


def usage_chunk(head: Head, usage: Usage) -> dict[str, Any]:
    return {**_chunk(head, []), "usage": usage_dict(usage)}


def _chunk(head: Head, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": head.id,
        "object": head.chunk_object,
        "created": head.created,
        "model": head.model,
        "choices": choices,
    }
