"""The few request fields the router reads; the body itself is passed on unchanged."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from corral.config import Task
from corral.errors import InvalidRequestError

#: OpenAI path -> the task a model must serve to answer it.
ENDPOINT_TASKS: dict[str, Task] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
}

#: Which tasks may answer a request for a given task (a chat model also completes text).
ACCEPTING_TASKS: dict[Task, frozenset[Task]] = {
    "chat": frozenset({"chat"}),
    "completion": frozenset({"completion", "chat"}),
    "embedding": frozenset({"embedding"}),
}


class RoutingFields(NamedTuple):
    model: str
    stream: bool
    user: str | None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object, or raise a 400."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    return data


def routing_fields(data: dict[str, Any]) -> RoutingFields:
    """Read model, stream and user from a parsed body, checking only their types."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required and must be a non-empty string", param="model")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean", param="stream")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequestError("'user' must be a string", param="user")
    return RoutingFields(model, stream, user)


def last_int_field(tail: bytes, name: bytes) -> int | None:
    """The integer after the last ``name`` (a quoted JSON key) in ``tail``, without parsing.

    For reading ``usage`` from the last bytes of a response the router passes through.
    """
    at = tail.rfind(name)
    if at < 0:
        return None
    at += len(name)
    end = len(tail)
    while at < end and tail[at] in b" \t\r\n:":
        at += 1
    start = at
    while at < end and 48 <= tail[at] <= 57:
        at += 1
    return int(tail[start:at]) if at > start else None
