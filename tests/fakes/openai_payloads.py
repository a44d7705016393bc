"""What the fake engine says: OpenAI response bodies and stream chunks, deterministic.

Every token piece names the engine and the request (``w1#3:7 ``), so a byte that
reached the wrong client, or arrived twice, cannot go unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

Kind = str  # "chat" | "completion"


def pieces(tag: str, count: int) -> list[str]:
    return [f"{tag}:{index} " for index in range(count)]


def prompt_tokens(request: dict[str, Any]) -> int:
    """A crude token count: whitespace-separated words of the prompt, messages or input."""
    text = request.get("prompt") or request.get("input") or ""
    messages = request.get("messages")
    if isinstance(messages, list):
        text = " ".join(str(m.get("content", "")) if isinstance(m, dict) else "" for m in messages)
    return max(1, len(str(text).split()))


def usage(request: dict[str, Any], completion: int, cached: int | None = None) -> dict[str, Any]:
    """OpenAI's usage; ``cached`` prompt tokens (reused from a KV cache) when given."""
    prompt = prompt_tokens(request)
    counts: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        counts["prompt_tokens_details"] = {"cached_tokens": cached}
    return counts


def completion_body(
    kind: Kind,
    ident: str,
    created: int,
    request: dict[str, Any],
    parts: list[str],
    cached: int | None = None,
) -> dict[str, Any]:
    text = "".join(parts)
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
        obj = "text_completion"
    choice["finish_reason"] = "length"
    return {
        "id": ident,
        "object": obj,
        "created": created,
        "model": request.get("model", ""),
        "choices": [choice],
        "usage": usage(request, len(parts), cached),
    }


def stream_chunk(
    kind: Kind,
    ident: str,
    created: int,
    model: str,
    piece: str | None,
    finish: str | None,
    *,
    first: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` / ``text_completion`` chunk; ``piece=None`` ends the choice."""
    if kind == "chat":
        delta: dict[str, Any] = {} if piece is None else {"content": piece}
        if first:
            delta["role"] = "assistant"
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": ident, "object": obj, "created": created, "model": model, "choices": [choice]}


def usage_chunk(
    kind: Kind,
    ident: str,
    created: int,
    request: dict[str, Any],
    completion: int,
    cached: int | None = None,
) -> dict[str, Any]:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {
        "id": ident,
        "object": obj,
        "created": created,
        "model": request.get("model", ""),
        "choices": [],
        "usage": usage(request, completion, cached),
    }


def embedding_body(request: dict[str, Any], dims: int) -> dict[str, Any]:
    raw = request.get("input", "")
    inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = embed(str(item), dims)
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    prompt = sum(max(1, len(str(item).split())) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": request.get("model", ""),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def embed(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    digest = hashlib.shake_256(text.encode()).digest(dims)
    vector = [(byte - 127.5) / 127.5 for byte in digest]
    norm = sum(value * value for value in vector) ** 0.5 or 1.0
    return [value / norm for value in vector]
