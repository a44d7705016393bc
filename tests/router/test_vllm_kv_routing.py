"""The kv policy in front of vLLM replicas: the router follows their ZMQ KV events.

Two fake vLLM replicas (fake HTTP engines, and real ZMQ publishers on two loopback
addresses at the same ports, as two pods would be) publish vLLM-format events; the
router tokenizes the chat with the model's GGUF vocabulary, re-hashes vLLM's blocks the
same way, and sends the request to the replica holding its prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.fakes.engine import FakeEngine
from tests.fakes.vllm_kv_publisher import FakeVllmPublisher
from tests.router.support import InMemoryClient, eventually, started

from corral.config import StackConfig, parse_stack
from corral.errors import ConfigError
from corral.prefix.prompt import read_prompt
from corral.prefix.tokenizer import PromptTokenizer
from corral.router import create_app
from corral.router.transport.asgi_transport import ASGITransport

CHAT = "/v1/chat/completions"
HOSTS = ("127.0.0.1", "127.0.0.2")
URLS = [f"http://{host}:8000" for host in HOSTS]


def vllm_stack(events_port: int, replay_port: int, **model: Any) -> StackConfig:
    entry = {
        "name": "smol", "task": "chat", "engine": "vllm", "source": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "tokenizer": "smollm2-135m-instruct", "replicas": 0, "endpoints": URLS,
        "vllm": {"kv_events_port": events_port, "kv_events_replay_port": replay_port},
        **model,
    }  # fmt: skip
    return parse_stack(
        {"router": {"routing": {"policy": "kv"}, "health_interval_s": 60}, "models": [entry]}
    )


@contextlib.asynccontextmanager
async def two_replicas() -> AsyncIterator[list[FakeVllmPublisher]]:
    first = await FakeVllmPublisher.start(host=HOSTS[0])
    try:
        second = await FakeVllmPublisher.start(
            host=HOSTS[1], events_port=first.events_port, replay_port=first.replay_port
        )
    except BaseException:
        await first.aclose()
        raise
    try:
        yield [first, second]
    finally:
        await first.aclose()
        await second.aclose()


def test_a_vllm_model_on_kv_needs_a_tokenizer_for_the_router() -> None:
    with pytest.raises(ConfigError, match="cannot use the 'kv' policy without `tokenizer`"):
        create_app(vllm_stack(5557, 5558, tokenizer=None))


@pytest.mark.slow
async def test_kv_policy_routes_to_the_vllm_replica_holding_the_prefix() -> None:
    tokenizer = await asyncio.to_thread(
        PromptTokenizer.load, "smollm2-135m-instruct", cache_bytes=1 << 22
    )
    messages = [
        {"role": "system", "content": "You are a patient tutor. " * 12},
        {"role": "user", "content": "Why is the sky blue? " * 4},
    ]
    body = {"model": "smol", "messages": messages}
    prompt = read_prompt(CHAT, body)
    assert prompt is not None
    tokens = tokenizer.tokenize(prompt)
    tokenizer.close()
    assert tokens is not None and len(tokens) > 64
    full = len(tokens) // 16
    engines = {url: FakeEngine(url) for url in URLS}
    async with two_replicas() as publishers:
        stack = vllm_stack(publishers[0].events_port, publishers[0].replay_port)
        async with started(stack, ASGITransport(dict(engines)), seed=3) as app:
            assert app.routing.vllm_subscriber is not None and app.routing.subscriber is None
            for publisher in publishers:
                await publisher.subscribed()
            # the second replica computed this prompt before: vLLM says so, in its hashes
            publishers[1].store([1000 + i for i in range(full)], tokens[: full * 16])
            await eventually(lambda: app.routing.index.blocks(URLS[1]) == full)
            client = InMemoryClient(app)
            for _ in range(3):
                reply = await client.post(CHAT, body)
                assert reply.status == 200
                assert reply.headers[b"x-corral-endpoint"].decode() == URLS[1]
                assert int(reply.headers[b"x-corral-predicted-cached-tokens"]) == full * 16
            assert len(engines[URLS[1]].records) == 3 and not engines[URLS[0]].records
        assert app.routing.vllm_subscriber is None
