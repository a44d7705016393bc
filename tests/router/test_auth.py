"""API keys at the router: 401 without a valid key, 403 outside a key's models, open without keys."""

from __future__ import annotations

import hashlib

import pytest
from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, started

from corral.config import parse_stack, with_env_keys
from corral.errors import ConfigError
from corral.router.transport.asgi_transport import ASGITransport

CHAT = {"model": "chat", "messages": []}
EMBED = {"model": "embed", "input": "x"}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _stack(keys: list[dict]):
    return parse_stack({
        "router": {"health_interval_s": 60, "auth": {"keys": keys}},
        "models": [
            {"name": "chat-model", "aliases": ["chat"], "task": "chat", "engine": "vllm",
             "source": "fake", "replicas": 0, "endpoints": ["http://w1"]},
            {"name": "embed-model", "aliases": ["embed"], "task": "embedding", "engine": "vllm",
             "source": "fake", "replicas": 0, "endpoints": ["http://w2"]},
        ],
    })


def _network() -> ASGITransport:
    return ASGITransport({"http://w1": FakeEngine("w1"), "http://w2": FakeEngine("w2")})


async def test_keys_are_required_and_checked() -> None:
    stack = _stack([{"name": "team-a", "sha256": _digest("sk-a")},
                    {"name": "embedder", "sha256": _digest("sk-e"), "models": ["embed"]}])
    async with started(stack, _network()) as app:
        client = InMemoryClient(app)
        missing = await client.post("/v1/chat/completions", CHAT)
        assert missing.status == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        assert missing.headers[b"www-authenticate"] == b"Bearer"
        wrong = await client.post("/v1/chat/completions", CHAT, [("authorization", "Bearer sk-nope")])
        assert wrong.status == 401 and "not valid" in wrong.json()["error"]["message"]
        ok = await client.post("/v1/chat/completions", CHAT, [("authorization", "Bearer sk-a")])
        assert ok.status == 200
        denied = await client.post("/v1/chat/completions", CHAT, [("authorization", "bearer sk-e")])
        assert denied.status == 403 and denied.json()["error"]["type"] == "permission_error"
        allowed = await client.post("/v1/embeddings", EMBED, [("authorization", "Bearer sk-e")])
        assert allowed.status == 200
        assert (await client.get("/v1/models")).status == 401
        assert (await client.get("/health")).status == 200


async def test_without_keys_the_router_is_open() -> None:
    async with started(_stack([]), _network()) as app:
        assert (await InMemoryClient(app).post("/v1/chat/completions", CHAT)).status == 200


def test_env_keys_are_hashed_and_deduplicated() -> None:
    stack = with_env_keys(_stack([]), "ops:sk-1, ci:sk-2")
    assert [(k.name, k.sha256) for k in stack.router.auth.keys] == [("ops", _digest("sk-1")), ("ci", _digest("sk-2"))]
    assert with_env_keys(stack, "ops:sk-1").router.auth.keys == stack.router.auth.keys
    with pytest.raises(ConfigError, match="name:key"):
        with_env_keys(stack, "just-a-key")


def test_bad_key_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="sha256: must be 64 lower-case hex digits"):
        _stack([{"name": "a", "sha256": "sk-plaintext"}])
    with pytest.raises(ConfigError, match=r"router.auth.keys \(a\).models: unknown model\(s\) gpt-4"):
        _stack([{"name": "a", "sha256": _digest("x"), "models": ["gpt-4"]}])
