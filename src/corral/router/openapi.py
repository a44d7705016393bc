"""The router's OpenAPI 3.1 description, served at ``GET /openapi.json``.

Request bodies are the worker's own pydantic models (:mod:`corral.worker.schemas`), so
the description says what a corral worker accepts, field by field; each operation's
``model`` lists the names and aliases this router serves for it (the description is of
one stack). Responses are OpenAI's objects with the fields clients read (more may come:
vLLM adds its own), and every error, whoever answers it, has OpenAI's shape
(:class:`ErrorResponse`). Streaming answers are ``text/event-stream``: ``data:`` frames
of chunk objects, ``data: [DONE]``, or an error frame when a stream breaks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from corral.config import ModelConfig, StackConfig, Task
from corral.protocol.fields import ACCEPTING_TASKS, ENDPOINT_TASKS

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | int | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: every 4xx and 5xx body, and the SSE frame of a broken stream."""

    error: ErrorDetail


class CachedTokens(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: CachedTokens | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` frame of a streamed chat answer (the last may carry only ``usage``)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32s


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    task: Task


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    models_without_healthy_endpoint: list[str] | None = None


_RESPONSES: tuple[type[BaseModel], ...] = (
    ErrorResponse, ChatCompletion, ChatCompletionChunk, Completion, EmbeddingList, ModelEntry, ModelList,
    Health, Readiness,
)

#: What each status means, for every operation that can answer it.
_ERRORS = {
    "400": "malformed JSON, a bad or unsupported field, a prompt longer than the model's context",
    "401": "a missing or unknown API key",
    "403": "the API key may not use this model",
    "404": "no such model (the message lists the known ones)",
    "413": "the body is over router.max_body_bytes",
    "429": "over a rate limit; see Retry-After and the x-ratelimit-* headers",
    "502": "a worker failed and no other could answer",
    "503": "the model's workers are full or down; see Retry-After",
    "504": "a worker stayed silent longer than router.idle_timeout_s",
}

_INFERENCE = {
    "/v1/chat/completions": ("createChatCompletion", "ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk"),
    "/v1/completions": ("createCompletion", "CompletionRequest", "Completion", "Completion"),
    "/v1/embeddings": ("createEmbedding", "EmbeddingRequest", "EmbeddingList", None),
}


def openapi_document(stack: StackConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a router serving ``stack``."""
    from corral.worker import schemas as requests  # the worker's request models

    _, defs = models_json_schema(
        [(model, "validation") for model in (requests.ChatCompletionRequest, requests.CompletionRequest,
                                             requests.EmbeddingRequest)]
        + [(model, "validation") for model in _RESPONSES],
        ref_template=REF,
    )
    schemas: dict[str, Any] = defs["$defs"]
    paths: dict[str, Any] = {}
    secured = bool(stack.router.auth.keys)
    for path, (operation_id, request, response, chunk) in _INFERENCE.items():
        served = _serving(stack.models, ENDPOINT_TASKS[path])
        if not served:
            continue
        _narrow(schemas[request], served)
        paths[path] = {"post": _inference(operation_id, request, response, chunk, secured)}
    paths["/v1/models"] = {"get": _get("listModels", "ModelList", secured, errors=())}
    paths["/v1/models/{model}"] = {"get": {
        **_get("retrieveModel", "ModelEntry", secured, errors=("404",)),
        "parameters": [{"name": "model", "in": "path", "required": True, "description": "a model name or alias",
                        "schema": {"type": "string", "enum": [n for m in stack.models for n in m.served_names]}}],
    }}
    paths["/health"] = {"get": _get("health", "Health", False, errors=())}
    paths["/ready"] = {"get": _get("ready", "Readiness", False, errors=())}
    paths["/ready"]["get"]["responses"]["503"] = _json("not every model has a healthy endpoint", "Readiness")
    components: dict[str, Any] = {"schemas": schemas}
    if secured:
        components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "corral router",
            "version": "1",
            "description": "OpenAI-compatible endpoints in front of the stack's workers.",
        },
        "paths": paths,
        "components": components,
    }


def _serving(models: tuple[ModelConfig, ...], task: Task) -> list[ModelConfig]:
    return [model for model in models if model.task in ACCEPTING_TASKS[task]]


def _narrow(schema: dict[str, Any], served: list[ModelConfig]) -> None:
    """``model``: the names this router serves for the operation; ``max_tokens``: its bound."""
    names = [name for model in served for name in model.served_names]
    schema["properties"]["model"] = {
        "type": "string", "enum": names, "description": "a model name or alias this router serves",
    }
    largest = max(model.max_tokens_cap or model.context_length - 1 for model in served)
    for field in ("max_tokens", "max_completion_tokens"):
        spec = schema["properties"].get(field)
        if spec is not None:
            spec["anyOf"][0]["maximum"] = largest
            spec["description"] = (
                "at most the model's max_tokens_cap, and prompt tokens + this must fit its context"
            )


def _inference(operation_id: str, request: str, response: str, chunk: str | None,
               secured: bool) -> dict[str, Any]:
    ok = _json("the answer", response)
    if chunk is not None:
        ok["description"] = "the answer; with stream: true, server-sent events"
        ok["content"]["text/event-stream"] = {"schema": _event(chunk)}
    codes = ["400", "404", "413", "429", "502", "503", "504"] + (["401", "403"] if secured else [])
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": REF.format(model=request)}}}},
        "responses": {"200": ok, **{code: _error(code) for code in sorted(codes)}},
    }
    if secured:
        operation["security"] = [{"apiKey": []}]
    return operation


def _get(operation_id: str, response: str, secured: bool, *, errors: tuple[str, ...]) -> dict[str, Any]:
    codes = list(errors) + (["401"] if secured else [])
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "responses": {"200": _json("OK", response), **{code: _error(code) for code in sorted(codes)}},
    }
    if secured:
        operation["security"] = [{"apiKey": []}]
    return operation


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}}


def _error(code: str) -> dict[str, Any]:
    return _json(_ERRORS[code], "ErrorResponse")


def _event(chunk: str) -> dict[str, Any]:
    """One server-sent event (the shape OpenAPI 3.2's ``itemSchema`` gives them): its
    ``data`` is a chunk as JSON, ``[DONE]`` at the end, or an error when a stream breaks."""
    payload = {"anyOf": [{"$ref": REF.format(model=chunk)}, {"$ref": REF.format(model="ErrorResponse")}]}
    return {
        "type": "object",
        "description": "each event of the stream: data frames of chunks, then data: [DONE]",
        "properties": {
            "event": {"type": "string"},
            "data": {"anyOf": [
                {"const": "[DONE]"},
                {"type": "string", "contentMediaType": "application/json", "contentSchema": payload},
            ]},
        },
        "required": ["data"],
    }
