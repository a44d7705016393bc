"""A prompt longer than the model's context is refused by the router, exactly as the worker would.

Real GGUF vocabularies (SmolLM2 for chat, with its chat template; Gemma 3, SentencePiece,
for text completions); the workers are fake engines, which must never see a refused request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.fakes.engine import FakeEngine
from tests.prefix.support import record_tokenized
from tests.router.support import InMemoryClient, started

from corral.config import parse_stack
from corral.prefix.prompt import read_prompt
from corral.prefix.tokenizer import PromptTokenizer
from corral.router.transport.asgi_transport import ASGITransport

pytestmark = pytest.mark.slow

CTX = 128
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"


@pytest.fixture(scope="module")
def smol() -> Iterator[PromptTokenizer]:
    tokenizer = PromptTokenizer.load(SMOL, cache_bytes=0)
    yield tokenizer
    tokenizer.close()


def _stack() -> Any:
    def model(name: str, task: str, engine: str, source: str) -> dict[str, Any]:
        return {"name": name, "task": task, "engine": engine, "source": source, "replicas": 0,
                "endpoints": ["http://w1"], "context_length": CTX}

    return parse_stack({
        "router": {"health_interval_s": 60},
        "models": [model("smol", "chat", "llamacpp", SMOL), model("gemma", "completion", "llamacpp", GEMMA),
                   model("remote", "chat", "vllm", "some/hub-model"),
                   model("unreadable", "chat", "llamacpp", "/nonexistent/model.gguf")],
    })


def chat(words: int, **extra: Any) -> dict[str, Any]:
    return {"model": "smol", "messages": [{"role": "user", "content": "the " * words}], **extra}


def tokens(tokenizer: PromptTokenizer, body: dict[str, Any]) -> int:
    prompt = read_prompt(CHAT, body)
    assert prompt is not None
    counted = tokenizer.tokenize(prompt)
    assert counted is not None
    return len(counted)


async def test_the_limit_is_exact_to_the_token(smol: PromptTokenizer) -> None:
    engine = FakeEngine("w1")
    body = chat(60)  # 240 bytes: over the context in bytes, so it must be tokenized
    n = tokens(smol, body)
    assert len(body["messages"][0]["content"]) > CTX > n
    async with started(_stack(), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        fits = await client.post(CHAT, {**body, "max_tokens": CTX - n})
        over = await client.post(CHAT, {**body, "max_tokens": CTX - n + 1})
        also_over = await client.post(CHAT, {**body, "max_completion_tokens": CTX - n + 1})
    assert fits.status == 200
    assert over.status == 400 and also_over.status == 400
    error = over.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert error["message"] == (
        f"this model's maximum context length is {CTX} tokens; the prompt has {n} tokens and max_tokens "
        f"is {CTX - n + 1} ({CTX + 1} in total); lower max_tokens to at most {CTX - n} or shorten the prompt"
    )
    assert len(engine.records) == 1  # only the one that fits reached a worker


async def test_without_max_tokens_one_token_of_room_is_needed(smol: PromptTokenizer) -> None:
    engine = FakeEngine("w1")
    around = [chat(words) for words in range(CTX - 40, CTX - 20)]
    counts = [tokens(smol, body) for body in around]
    assert min(counts) < CTX - 1 and max(counts) > CTX  # the boundary is among them
    async with started(_stack(), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        replies = [await client.post(CHAT, body) for body in around]
        huge = await client.post(CHAT, chat(5000, stream=True))
    for count, reply in zip(counts, replies, strict=True):
        assert reply.status == (200 if count < CTX else 400), (count, reply.body)
        if count >= CTX:
            assert f"the prompt has {count} tokens, which leaves no room" in reply.json()["error"]["message"]
    assert huge.status == 400 and huge.json()["error"]["code"] == "context_length_exceeded"
    assert len(engine.records) == sum(count < CTX for count in counts)


async def test_text_prompts_and_token_ids() -> None:
    engine = FakeEngine("w1")
    async with started(_stack(), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        short = await client.post(TEXT, {"model": "gemma", "prompt": "Once upon a time", "max_tokens": 16})
        long_text = await client.post(TEXT, {"model": "gemma", "prompt": "word " * 200, "max_tokens": 16})
        batch = await client.post(TEXT, {"model": "gemma", "prompt": ["word " * 200]})
        ids = await client.post(TEXT, {"model": "gemma", "prompt": list(range(1, CTX + 1))})  # no room left
        ids_fit = await client.post(TEXT, {"model": "gemma", "prompt": list(range(1, CTX - 8)), "max_tokens": 8})
    assert short.status == 200 and ids_fit.status == 200
    for reply in (long_text, batch, ids):
        assert reply.status == 400, reply.body
        assert reply.json()["error"]["param"] == "prompt"
        assert reply.json()["error"]["code"] == "context_length_exceeded"
    assert "the prompt has 128 tokens" in ids.json()["error"]["message"]
    assert len(engine.records) == 2


async def test_models_without_a_router_tokenizer_are_left_to_the_worker() -> None:
    engine = FakeEngine("w1")
    long_chat = {"messages": [{"role": "user", "content": "the " * 500}]}
    async with started(_stack(), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        remote = await client.post(CHAT, {"model": "remote", **long_chat})
        unreadable = await client.post(CHAT, {"model": "unreadable", **long_chat})
        malformed = await client.post(CHAT, {"model": "smol", "messages": [{"role": "tool", "content": "x" * 999}]})
    assert [remote.status, unreadable.status, malformed.status] == [200, 200, 200]  # the fake engine accepts
    assert len(engine.records) == 3


async def test_a_conversation_resent_with_a_new_turn_tokenizes_only_that_turn(smol: PromptTokenizer) -> None:
    engine = FakeEngine("w1")
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "the " * 3}
             for i in range(7)]
    async with started(_stack(), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        first = await client.post(CHAT, {"model": "smol", "messages": turns[:5], "max_tokens": 8})
        tokenizer = app._prompts._tokenizers["smol"]
        seen = len(tokenizer.cache)
        tokenized = record_tokenized(tokenizer)
        second = await client.post(CHAT, {"model": "smol", "messages": turns, "max_tokens": 8})
    assert first.status == 200 and second.status == 200
    assert seen >= 5  # the first had to be tokenized (its bytes did not fit 128 tokens)
    # the second: only the new turns' pieces (answer, question)
    assert 1 <= len(tokenized) <= 2 and all("turn 5" in text or "turn 6" in text for text in tokenized)


def test_the_template_bound_covers_every_rendered_conversation(smol: PromptTokenizer) -> None:
    import random

    from corral.router.prompt_length import template_bytes

    bound = template_bytes(smol)
    assert bound is not None
    fixed, per_message = bound
    rng = random.Random(7)
    for _ in range(200):
        messages = [{"role": rng.choice(["system", "user", "assistant"]),
                     "content": "".join(rng.choice("ab é😀\n<>|") for _ in range(rng.randrange(40)))}
                    for _ in range(rng.randrange(1, 8))]
        assert smol.template is not None
        rendered = len(smol.template.render(messages).encode())
        payload = sum(len(m["role"].encode()) + len(m["content"].encode()) for m in messages)
        assert rendered <= fixed + per_message * len(messages) + payload


async def test_a_chat_that_surely_fits_is_not_rendered() -> None:
    from corral.config import ModelConfig
    from corral.router.prompt_length import PromptLengthCheck

    model = ModelConfig(name="smol", task="chat", engine="llamacpp", source=SMOL, context_length=4096)
    check = PromptLengthCheck([model])
    await check.start({})
    try:
        fits = await check.check(model, CHAT, chat(50), max_tokens=64)
        near = await check.check(model, CHAT, chat(900), max_tokens=64)  # 3,600 bytes, rendered: fits
        nearer = await check.check(model, CHAT, chat(1100), max_tokens=64)  # 4,400 bytes: count
        await check.check(model, CHAT, chat(1100), max_tokens=64)  # its pieces' tokens known: counted
        again = await check.check(model, CHAT, chat(1100), max_tokens=64)  # the whole message's known
    finally:
        await check.aclose()
    assert fits is None  # decided from bytes alone
    assert near is None  # decided from the rendered message's bytes
    assert nearer is not None and nearer.pieces  # planned, tokenized, counted
    assert again is None  # the rendered message's cached tokens fit: not planned again
