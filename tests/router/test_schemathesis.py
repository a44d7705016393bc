"""Schemathesis against the router's own OpenAPI description, over ASGI, fake engines behind.

Cases come from ``GET /openapi.json``: bodies that fit the schema (positive) and bodies,
headers and parameters that break it (negative). Whatever arrives, the router must not
answer 5xx, and every answer must be one the description documents: status, content type,
body schema. Derandomized like the rest of the suite (tests/conftest.py), so a red run is
repeatable; HYPOTHESIS_PROFILE=explore draws more.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.fakes.engine import FakeEngine
from tests.router.support import make_stack

from corral.router import create_app
from corral.router.openapi import openapi_document
from corral.router.transport.asgi_transport import ASGITransport

CHAT = [{"role": "user", "content": "hello there"}]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def schema() -> Iterator[Any]:
    """The router (chat and embedding models on fake engines), started by schemathesis' ASGI client."""
    network = ASGITransport({"http://w1": FakeEngine("w1"), "http://w2": FakeEngine("w2")})
    stack = make_stack(["http://w1"], ["http://w2"], max_body_bytes=64 * 1024)
    app = create_app(stack, transport=network, rng=random.Random(0))
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        shutdown_lifespans()  # the router's lifespan: shutdown


def test_the_description_names_every_route_the_router_serves(schema: Any) -> None:
    raw = schema.raw_schema
    assert raw["openapi"] == "3.1.0"
    assert set(raw["paths"]) == {
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/models/{model}",
        "/health", "/ready",
    }
    chat = raw["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["properties"]["model"]["enum"] == ["chat-model", "chat"]
    assert set(chat["required"]) == {"model", "messages"}
    assert raw["components"]["schemas"]["EmbeddingRequest"]["properties"]["model"]["enum"] == ["embed-model", "embed"]


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "chat", "messages": CHAT, "stream": True,
                              "stream_options": {"include_usage": True}}),
    ("/v1/chat/completions", {"model": "chat-model", "messages": CHAT, "max_tokens": 3}),
    ("/v1/completions", {"model": "chat", "prompt": "once upon", "stream": True}),
    ("/v1/embeddings", {"model": "embed", "input": ["a", "b"], "encoding_format": "base64"}),
    ("/v1/chat/completions", {"model": "chat", "messages": CHAT, "max_tokens": 4096}),
])
def test_answers_match_the_description(schema: Any, path: str, body: dict[str, Any]) -> None:
    response = schema[path]["POST"].Case(body=body).call_and_validate(checks=CHECKS)
    assert response.status_code == (400 if body.get("max_tokens") == 4096 else 200)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_answer_as_described(schema: Any, mode: GenerationMode) -> None:
    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=schema.as_strategy(generation_mode=mode))
    def exchange(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    exchange()


def test_with_api_keys_the_description_asks_for_a_bearer_key() -> None:
    key = {"name": "a", "sha256": hashlib.sha256(b"sk-a").hexdigest()}
    document = openapi_document(make_stack(["http://w1"], ["http://w2"], auth={"keys": [key]}))
    assert document["components"]["securitySchemes"] == {"apiKey": {"type": "http", "scheme": "bearer"}}
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"apiKey": []}] and {"401", "403"} <= set(chat["responses"])
    assert "security" not in document["paths"]["/health"]["get"]
