"""Every error the router answers itself: HTTP status and OpenAI's error shape."""

from __future__ import annotations

from typing import Any

import pytest
from tests.fakes.engine import FakeEngine
from tests.router.support import CHAT_MESSAGES, InMemoryClient, Reply, make_stack, started

from corral.router.transport.asgi_transport import ASGITransport


def assert_openai_error(
    reply: Reply, status: int, code: str | int, fragment: str = ""
) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers[b"content-type"] == b"application/json"
    error: dict[str, Any] = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert fragment in error["message"]
    return error


@pytest.fixture
async def client() -> Any:
    network = ASGITransport({"http://w1": FakeEngine("w1"), "http://e1": FakeEngine("e1")})
    async with started(
        make_stack(["http://w1"], ["http://e1"], max_body_bytes=2048), network
    ) as app:
        yield InMemoryClient(app)


async def test_malformed_json_is_400(client: InMemoryClient) -> None:
    reply = await client.post("/v1/chat/completions", b'{"model": "chat", ')
    error = assert_openai_error(reply, 400, "invalid_json", "not valid JSON")
    assert error["type"] == "invalid_request_error"


async def test_missing_model_is_400(client: InMemoryClient) -> None:
    error = assert_openai_error(
        await client.post("/v1/chat/completions", {"messages": []}), 400, 400
    )
    assert error["param"] == "model"


async def test_unknown_model_is_404_listing_known_names(client: InMemoryClient) -> None:
    reply = await client.post("/v1/chat/completions", {"model": "gpt-9", "messages": CHAT_MESSAGES})
    error = assert_openai_error(reply, 404, "model_not_found", "'gpt-9' does not exist")
    for name in ("chat-model", "chat", "embed-model", "embed"):
        assert name in error["message"]
    assert error["type"] == "not_found_error"


async def test_chat_request_to_embedding_model_is_400_saying_why(client: InMemoryClient) -> None:
    reply = await client.post("/v1/chat/completions", {"model": "embed", "messages": CHAT_MESSAGES})
    assert_openai_error(
        reply, 400, "wrong_task", "serves task 'embedding' and cannot answer /v1/chat/completions"
    )


async def test_embedding_request_to_chat_model_is_400(client: InMemoryClient) -> None:
    reply = await client.post("/v1/embeddings", {"model": "chat", "input": "x"})
    assert_openai_error(reply, 400, "wrong_task", "cannot answer /v1/embeddings")


async def test_completion_request_to_chat_model_is_accepted(client: InMemoryClient) -> None:
    reply = await client.post("/v1/completions", {"model": "chat", "prompt": "x"})
    assert reply.status == 200
    assert reply.json()["object"] == "text_completion"


async def test_oversize_body_is_413(client: InMemoryClient) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "x" * 3000}]}
    reply = await client.post("/v1/chat/completions", body)
    assert_openai_error(reply, 413, "payload_too_large", "2048 bytes")
    assert reply.headers[b"connection"] == b"close"


async def test_unknown_path_is_404(client: InMemoryClient) -> None:
    assert_openai_error(await client.get("/v2/everything"), 404, "route_not_found")


async def test_wrong_method_is_405(client: InMemoryClient) -> None:
    reply = await client.get("/v1/chat/completions")
    assert_openai_error(reply, 405, "method_not_allowed")
    assert reply.headers[b"allow"] == b"POST"


async def test_no_healthy_endpoint_is_503_with_retry_after() -> None:
    engine = FakeEngine("w1")
    engine.behaviour.healthy = False
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat", "messages": []}
        )
    error = assert_openai_error(reply, 503, "no_healthy_endpoint", "'chat-model'")
    assert error["type"] == "overloaded_error"
    assert reply.headers[b"retry-after"] == b"1"
    assert engine.records == []


async def test_model_without_any_endpoint_is_503() -> None:
    async with started(make_stack([]), ASGITransport({})) as app:
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat-model", "messages": []}
        )
    assert_openai_error(reply, 503, "no_healthy_endpoint")


async def test_every_replica_failing_to_connect_is_503() -> None:
    network = ASGITransport({"http://w1": FakeEngine("w1"), "http://w2": FakeEngine("w2")})
    async with started(make_stack(["http://w1", "http://w2"]), network) as app:
        network.apps.clear()  # both die after their last health check passed
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat", "messages": []}
        )
    assert_openai_error(reply, 503, "no_healthy_endpoint")


async def test_broken_worker_after_retries_is_502() -> None:
    engine = FakeEngine("w1")
    async with started(
        make_stack(["http://w1"], retries=1), ASGITransport({"http://w1": engine})
    ) as app:
        engine.drop_next(after_chunks=0, times=2)
        reply = await InMemoryClient(app).post(
            "/v1/chat/completions", {"model": "chat", "messages": []}
        )
    error = assert_openai_error(reply, 502, "upstream_error", "http://w1")
    assert error["type"] == "server_error"
    assert len(engine.records) == 2
