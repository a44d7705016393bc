"""Prefix reuse beyond the last prompt, on real models: correctness first, then the hits."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.worker.support import RealWorker, client, post, prompt_evals, usage_of, wait_until

from corral.config import CacheConfig, ModelConfig
from corral.prefix.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch
from corral.prefix.hashing import block_hashes
from corral.worker.engine import SamplingParams
from corral.worker.llamacpp import LlamaCppEngine

pytestmark = pytest.mark.slow

BLOCK = 16  # PrefixConfig's default block_size, which the test workers use

STORY_A = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, lit the great "
    "lamp, and wrote the weather, the ships and the birds into his logbook. "
) * 6
STORY_B = (
    "A gardener planted tomatoes, beans and squash in raised beds, watered them at dawn, "
    "and kept notes on the soil, the compost and the rain in a small notebook. "
) * 6


def settle(worker: RealWorker) -> None:
    """Wait until the engine thread has finished the last request's bookkeeping."""
    deadline = time.monotonic() + 10
    while worker.engine._current is not None or worker.engine.queue_depth:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def cached_tokens(reply: Any) -> int:
    details = usage_of(reply).prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    return details.cached_tokens


def generated_ids(worker: RealWorker, n_prompt: int) -> list[int]:
    """The tokens the last generation evaluated after its prompt (all but the last sampled)."""
    llama = worker.engine.llama
    return [int(token) for token in llama.input_ids[n_prompt : llama.n_tokens]]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def complete(api: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> Any:
    return api.completions.create(
        model=model,
        prompt=prompt,
        temperature=0,
        max_tokens=max_tokens,
        extra_body={"ignore_eos": True},
    )


def check_a_store_hit_generates_what_a_cold_prefill_generates(
    worker: RealWorker, model: str
) -> None:
    api = client(worker.url)
    cold = complete(api, model, STORY_A, 24)
    n_prompt = usage_of(cold).prompt_tokens
    cold_ids = generated_ids(worker, n_prompt)
    assert len(cold_ids) == 23 and n_prompt > 8 * BLOCK
    assert cached_tokens(cold) < BLOCK  # nothing of it was there before
    settle(worker)
    complete(api, model, STORY_B, 4)  # another user replaces the context
    hits = worker.engine.prefix_stats.hits
    warm = complete(api, model, STORY_A, 24)
    assert worker.engine.prefix_stats.hits == hits + 1
    assert cached_tokens(warm) >= n_prompt // BLOCK * BLOCK - 1
    assert generated_ids(worker, n_prompt) == cold_ids  # token for token
    assert warm.choices[0].text == cold.choices[0].text


def test_smollm2_store_hit_equals_cold_prefill(smollm2: RealWorker) -> None:
    check_a_store_hit_generates_what_a_cold_prefill_generates(smollm2, "smol")


def test_gemma_store_hit_equals_cold_prefill(gemma3: RealWorker) -> None:
    check_a_store_hit_generates_what_a_cold_prefill_generates(gemma3, "gemma3-270m")


def test_two_users_interleaved_on_one_worker_both_hit(smollm2: RealWorker) -> None:
    api = client(smollm2.url)
    system: ChatCompletionMessageParam = {
        "role": "system",
        "content": "You are a patient assistant who answers in one short sentence.",
    }

    def chat(messages: list[ChatCompletionMessageParam]) -> Any:
        reply = api.chat.completions.create(
            model="smol", messages=messages, temperature=0, max_tokens=24,
            extra_body={"ignore_eos": True},
        )
        settle(smollm2)
        return reply

    def next_round(
        messages: list[ChatCompletionMessageParam], reply: Any, question: str
    ) -> list[ChatCompletionMessageParam]:
        answer = reply.choices[0].message.content or ""
        return [
            *messages,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": question},
        ]

    user_a: list[ChatCompletionMessageParam] = [system, {"role": "user", "content": STORY_A}]
    user_b: list[ChatCompletionMessageParam] = [system, {"role": "user", "content": STORY_B}]
    a1, b1 = chat(user_a), chat(user_b)
    hits = smollm2.engine.prefix_stats.hits
    for first, messages in ((a1, user_a), (b1, user_b)):
        longer = next_round(messages, first, "What happened next?")
        before = prompt_evals(smollm2.engine)[0]
        second = chat(longer)
        # The first round came from the store, its answer included: 23 generated tokens
        # were evaluated, so at least one more block than the first prompt was stored.
        assert cached_tokens(second) > usage_of(first).prompt_tokens
        # ...and only the rest was prefilled:
        assert prompt_evals(smollm2.engine)[0] - before == (
            usage_of(second).prompt_tokens - cached_tokens(second)
        )
    assert smollm2.engine.prefix_stats.hits == hits + 2


def test_the_worker_reports_the_blocks_a_router_would_hash(smollm2: RealWorker) -> None:
    messages = [{"role": "user", "content": "Tell me about the sea. " + STORY_A}]
    reply = client(smollm2.url).chat.completions.create(
        model="smol",
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=4,
    )
    settle(smollm2)
    status, tokenized = post(f"{smollm2.url}/tokenize", {"messages": messages})
    assert status == 200 and tokenized["count"] == usage_of(reply).prompt_tokens
    router_hashes = block_hashes(
        tokenized["tokens"], block_size=BLOCK, seed="smollm2-135m-instruct"
    )
    body = get_json(f"{smollm2.url}/v1/kv/blocks")
    snapshot = EventBatch.from_dict(body)
    assert snapshot.events[0] == AllBlocksCleared()
    held = {h for e in snapshot.events if isinstance(e, BlockStored) for h in e.block_hashes}
    assert set(router_hashes) <= held
    assert body["store"]["entries"] >= 1 and body["store"]["nbytes"] > 0


async def test_a_full_store_evicts_and_the_events_follow() -> None:
    model = ModelConfig.model_validate(
        {
            "name": "smol",
            "task": "completion",
            "engine": "llamacpp",
            "source": "smollm2-135m-instruct",
            "threads": 2,
            "context_length": 512,
        }
    )
    # Room for one ~100-token prefix of SmolLM2 (23 KB per token), not two.
    engine = LlamaCppEngine(model, cache=CacheConfig(ram_bytes=3_000_000, min_tokens=32))
    await engine.start()
    held: set[int] = set()
    try:
        seen = 0
        for text in (STORY_A[:400], STORY_B[:400]):
            tokens = await engine.tokenize(text)
            stream = engine.generate(tokens, SamplingParams(max_tokens=2, temperature=0))
            assert [piece async for piece in stream]
            await wait_until(lambda: engine._current is None, timeout_s=10)
            for batch in engine.kv_events.since(seen) or []:
                apply_events(held, batch.events)
                seen = batch.seq
            stats = engine.prefix_stats
            assert stats.entries == 1 and stats.nbytes <= 3_000_000
            llama = engine.llama
            assert llama is not None
            context = block_hashes(
                llama.input_ids[: llama.n_tokens].tolist(), block_size=BLOCK, seed="smol"
            )
            assert held == set(context)  # the context, and the store's copy of its prompt
        assert engine.prefix_stats.evicted == 1
        assert any(
            isinstance(e, BlockRemoved) for b in engine.kv_events.since(0) or [] for e in b.events
        )
    finally:
        await engine.aclose()


def apply_events(held: set[int], events: Any) -> None:
    for event in events:
        if isinstance(event, AllBlocksCleared):
            held.clear()
        elif isinstance(event, BlockStored):
            held.update(event.block_hashes)
        else:
            held.difference_update(event.block_hashes)
