"""Prefix-aware routing through the whole router app: stack file, policies, self-check."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
from tests.fakes.engine import FakeEngine
from tests.fakes.kv_events import FakeKVEvents
from tests.router.support import InMemoryClient, eventually, make_stack, started

from corral.config import StackConfig, load_stack, parse_stack
from corral.errors import ConfigError
from corral.prefix.hashing import block_hashes
from corral.prefix.prompt import read_prompt
from corral.prefix.tokenizer import PromptTokenizer
from corral.router import create_app
from corral.router.transport.asgi_transport import ASGITransport

CHAT = "/v1/chat/completions"
PREDICTED = b"x-corral-predicted-cached-tokens"
ENDPOINT = b"x-corral-endpoint"


def kv_stack(urls: list[str], **routing: Any) -> StackConfig:
    """SmolLM2 served by corral workers at ``urls`` (started elsewhere), routed by ``kv``."""
    model = {
        "name": "smol",
        "task": "chat",
        "engine": "llamacpp",
        "source": "smollm2-135m-instruct",
        "replicas": 0,
        "endpoints": urls,
    }
    embed = {"name": "embed", "task": "embedding", "engine": "vllm", "source": "x",
             "replicas": 0, "endpoints": ["http://e1"]}  # fmt: skip
    router = {"routing": {"policy": "kv", "models": {"embed": "least_loaded"}, **routing}}
    return parse_stack({"router": {**router, "health_interval_s": 60}, "models": [model, embed]})


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a patient tutor. " * 12}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question {turn}: why is the sky blue? " * 4})
        messages.append({"role": "assistant", "content": f"Answer {turn}: scattering. " * 3})
    return messages


# -- the stack file -------------------------------------------------------------------------


def test_a_stack_file_selects_each_policy_and_its_weights(tmp_path: Any) -> None:
    for name in ("round_robin", "least_loaded", "session", "prefix", "kv"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            "router:\n"
            "  routing:\n"
            f"    policy: {name}\n"
            "    weights: {load: 0.5, session: 2, disk_hit: 0.4}\n"
            "    in_flight_tokens: 64\n"
            "    session_header: X-User-Session\n"
            "    models: {small: least_loaded}\n"
            "models:\n"
            "  - {name: big, task: chat, engine: llamacpp, source: smollm2-135m-instruct}\n"
            "  - {name: small, task: chat, engine: llamacpp, source: smollm2-135m-instruct}\n"
        )
        routing = load_stack(path).router.routing
        assert routing.policy_for("big") == name and routing.policy_for("small") == "least_loaded"
        assert routing.weights.load == 0.5 and routing.weights.disk_hit == 0.4
        assert routing.in_flight_tokens == 64
        assert routing.session_header == "x-user-session"


def test_routing_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="no model named 'nope'"):
        create_app(
            make_stack(["http://w1"], routing={"policy": "prefix", "models": {"nope": "kv"}})
        )
    with pytest.raises(ConfigError, match="cannot use the 'kv' policy"):
        create_app(make_stack(["http://w1"], policy="kv"))  # vLLM endpoints publish no events
    with pytest.raises(ConfigError):
        parse_stack({"router": {"routing": {"policy": "fastest"}}, "models": []})
    # The weights prefix and kv no longer read (they pick by least work) are refused by name.
    with pytest.raises(ConfigError, match=r"router\.routing\.weights\.prefix: Extra inputs"):
        parse_stack({"router": {"routing": {"weights": {"prefix": 2}}}, "models": []})


# -- prefix (approximate) -------------------------------------------------------------------


async def test_prefix_policy_keeps_a_conversation_on_one_worker() -> None:
    engines = {url: FakeEngine(url[-2:]) for url in ("http://w1", "http://w2", "http://w3")}
    stack = make_stack(list(engines), policy="prefix")
    async with started(stack, ASGITransport(dict(engines))) as app:
        client = InMemoryClient(app)
        homes = []
        for turns in range(1, 5):
            body = {"model": "chat", "messages": conversation(turns)}
            reply = await client.post(CHAT, body)
            assert reply.status == 200
            homes.append(reply.headers[ENDPOINT])
            predicted = int(reply.headers[PREDICTED])
            assert (predicted > 100) == (turns > 1)
        assert len(set(homes)) == 1
        other = await client.post(
            CHAT, {"model": "chat", "messages": [{"role": "user", "content": "hi " * 200}]}
        )
        assert int(other.headers[PREDICTED]) == 0


async def test_self_check_counts_agreement_from_json_and_stream_usage() -> None:
    engine = FakeEngine("w1")
    stack = make_stack(["http://w1"], policy="prefix")
    async with started(stack, ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        body: dict[str, Any] = {"model": "chat", "messages": conversation(2)}
        engine.behaviour.cached_tokens = 0
        await client.post(CHAT, body)  # a miss, reported as one
        reply = await client.post(CHAT, body)  # predicted: most of it
        predicted = int(reply.headers[PREDICTED])
        engine.behaviour.cached_tokens = predicted
        await client.post(CHAT, body)
        engine.behaviour.cached_tokens = 0  # the worker lost it
        stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
        streamed = await client.post(CHAT, stream)
        assert streamed.body.endswith(b"data: [DONE]\n\n")
        engine.behaviour.cached_tokens = None
        await client.post(CHAT, {**body, "stream": True})  # no usage at all
        counts = app.routing.selfcheck.snapshot()["chat-model"]
    assert counts["agree"] == 2 and counts["over"] == 2 and counts["unknown"] == 1


# -- kv (exact, from the workers' events) ---------------------------------------------------


@pytest.mark.slow
async def test_kv_policy_routes_to_the_worker_holding_the_prefix() -> None:
    """Fake workers that cache every prompt (hashed by the real SmolLM2 tokenizer) and say
    so in KV events; the router predicts exactly what they then report."""
    tokenizer = await asyncio.to_thread(
        PromptTokenizer.load, "smollm2-135m-instruct", cache_bytes=1 << 22
    )

    def hasher(request: dict[str, Any]) -> list[int]:
        prompt = read_prompt(CHAT, request)
        assert prompt is not None
        tokens = tokenizer.tokenize(prompt)
        assert tokens is not None
        return block_hashes(tokens, block_size=16, seed="smol")

    urls = ["http://w1", "http://w2", "http://w3"]
    kvs = {url: FakeKVEvents(hasher=hasher) for url in urls}
    engines = {url: FakeEngine(url[-2:], kv=kvs[url]) for url in urls}
    stack = kv_stack(urls)
    try:
        async with started(stack, ASGITransport(dict(engines)), seed=1) as app:
            assert app.routing.subscriber is not None
            await eventually(lambda: all(kv.open_streams == 1 for kv in kvs.values()))
            client = InMemoryClient(app)
            first = await client.post(CHAT, {"model": "smol", "messages": conversation(1)})
            home = first.headers[ENDPOINT].decode()
            assert first.headers[PREDICTED] == b"0"
            await eventually(lambda: app.routing.index.blocks(home) > 0)  # the worker's event
            index = app.routing.index
            assert [index.blocks(url) > 0 for url in urls].count(True) == 1
            for turns in (2, 3):
                body = {
                    "model": "smol",
                    "messages": conversation(turns),
                    "stream": turns == 3,
                    "stream_options": {"include_usage": True},
                }
                reply = await client.post(CHAT, body)
                assert reply.headers[ENDPOINT].decode() == home
                predicted = int(reply.headers[PREDICTED])
                assert predicted > 100
                usage = b'"cached_tokens":' + str(predicted).encode()
                assert usage in reply.body  # the fake worker reused exactly that
                hashes = hasher(body)

                def all_held(hashes: list[int] = hashes) -> bool:
                    return app.routing.index.matched(hashes, [home]) == [len(hashes)]

                await eventually(all_held)
            other = await client.post(
                CHAT, {"model": "smol", "messages": [{"role": "user", "content": "hello"}]}
            )
            assert other.status == 200
            embed = await client.post("/v1/embeddings", {"model": "embed", "input": "x"})
            assert embed.status in (200, 502, 503)  # routed (nothing serves it here)
            counts = app.routing.selfcheck.snapshot()["smol"]
            assert counts["agree"] == 4 and counts["over"] == counts["under"] == 0
        assert all(kv.open_streams == 0 for kv in kvs.values())
    finally:
        tokenizer.close()


@pytest.mark.slow
async def test_kv_policy_predicts_nothing_when_no_worker_holds_anything() -> None:
    kv = FakeKVEvents()
    engine = FakeEngine("w1", kv=kv)
    async with started(kv_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        reply = await InMemoryClient(app).post(
            CHAT, {"model": "smol", "messages": conversation(3), "max_tokens": 2}
        )
        assert reply.status == 200 and reply.headers[PREDICTED] == b"0"
        assert orjson.loads(reply.body)["choices"]
        tokenizer = app.routing.tokenizers["smol"]
        # Routing stopped after the first piece that missed: it tokenized (and cached) only
        # that batch; the prompt-length check needed none (the prompt's bytes fit).
        assert 0 < len(tokenizer.cache) < 6


def test_policies_share_one_bounded_index() -> None:
    app = create_app(
        make_stack(["http://w1"], routing={"policy": "prefix", "index_max_blocks": 50}),
        rng=random.Random(0),
    )
    assert app.routing.index.capacity == 50
