"""Real models through a real worker (uvicorn on 127.0.0.1), queried with the openai client."""

from __future__ import annotations

import time
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.worker.support import RealWorker, client, post, prompt_evals, usage_of

from corral.worker.chat_template import ChatTemplate
from corral.worker.engine import SamplingParams

pytestmark = pytest.mark.slow

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What's the capital of France? Answer in one sentence."}
]


def test_chat_answers_sensibly(smollm2: RealWorker) -> None:
    reply = client(smollm2.url).chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, temperature=0, max_tokens=24
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "smollm2-135m-instruct"


def test_usage_counts_the_rendered_prompt_exactly(smollm2: RealWorker) -> None:
    llama = smollm2.engine.llama
    template = ChatTemplate.from_metadata(
        llama.metadata, bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    assert template is not None
    rendered = template.render([{"role": "user", "content": str(QUESTION[0]["content"])}])
    expected = llama.tokenize(rendered.encode(), add_bos=False, special=True)
    reply = client(smollm2.url).chat.completions.create(
        model="smol", messages=QUESTION, temperature=0, max_tokens=5
    )
    assert usage_of(reply).prompt_tokens == len(expected)
    status, tokenized = post(f"{smollm2.url}/tokenize", {"messages": QUESTION})
    assert (status, tokenized["tokens"], tokenized["max_model_len"]) == (200, expected, 2048)


def test_max_tokens_gives_length_and_exactly_that_many_tokens(smollm2: RealWorker) -> None:
    reply = client(smollm2.url).completions.create(
        model="smol", prompt="Once upon a time", temperature=0, max_tokens=7
    )
    assert reply.choices[0].finish_reason == "length"
    assert usage_of(reply).completion_tokens == 7
    assert usage_of(reply).total_tokens == usage_of(reply).prompt_tokens + 7


def test_stream_joins_to_the_same_text_as_a_plain_request(smollm2: RealWorker) -> None:
    api = client(smollm2.url)
    args: dict[str, Any] = {
        "model": "smol",
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 16,
    }
    plain = api.chat.completions.create(**args)
    chunks = list(
        api.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == []
    assert usage_of(chunks[-1]).completion_tokens == usage_of(plain).completion_tokens
    assert usage_of(chunks[-1]).prompt_tokens == usage_of(plain).prompt_tokens


def test_same_seed_same_sample(smollm2: RealWorker) -> None:
    api = client(smollm2.url)
    args: dict[str, Any] = {
        "model": "smol",
        "prompt": "My favourite animal is",
        "temperature": 0.9,
        "max_tokens": 12,
    }
    first = api.completions.create(**args, seed=1234).choices[0].text
    again = api.completions.create(**args, seed=1234).choices[0].text
    assert first == again


def test_stop_sequences_end_the_text_before_them(smollm2: RealWorker) -> None:
    api = client(smollm2.url)
    args: dict[str, Any] = {
        "model": "smol",
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 24,
    }
    full = api.chat.completions.create(**args).choices[0].message.content or ""
    stopped = api.chat.completions.create(**args, stop=["Paris", "never"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == full[: full.index("Paris")]
    streamed = api.chat.completions.create(**args, stop="Paris", stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == full[: full.index("Paris")]
    )


def test_context_overflow_is_400(smollm2: RealWorker) -> None:
    status, body = post(
        f"{smollm2.url}/v1/completions", {"model": "smol", "prompt": "Hello", "max_tokens": 4000}
    )
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "context_length_exceeded",
        "prompt",
    )
    assert "2048" in body["error"]["message"] and "4000" in body["error"]["message"]
    status, body = post(
        f"{smollm2.url}/v1/completions", {"model": "smol", "prompt": "hello " * 2100}
    )
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")
    assert "no room" in body["error"]["message"]


def test_a_repeated_prompt_reuses_the_kv_cache(smollm2: RealWorker) -> None:
    api = client(smollm2.url)
    prompt = "Here is a long story about a lighthouse keeper and the sea. " * 20
    api.completions.create(model="smol", prompt="Something else entirely.", max_tokens=1)
    before = prompt_evals(smollm2.engine)
    first = api.completions.create(model="smol", prompt=prompt, temperature=0, max_tokens=2)
    middle = prompt_evals(smollm2.engine)
    second = api.completions.create(model="smol", prompt=prompt, temperature=0, max_tokens=2)
    after = prompt_evals(smollm2.engine)
    n_prompt = usage_of(first).prompt_tokens
    assert n_prompt > 200
    assert middle[0] - before[0] >= n_prompt - 1  # the first time, the prompt is evaluated...
    assert after[0] == middle[0]  # ...the second time, no batch at all: one token is replayed
    assert getattr(usage_of(second).prompt_tokens_details, "cached_tokens", None) == n_prompt - 1
    assert first.choices[0].text == second.choices[0].text


def test_a_client_leaving_a_stream_stops_generation(smollm2: RealWorker) -> None:
    api = client(smollm2.url)
    stream = api.completions.create(
        model="smol",
        prompt="Write a very long essay.",
        max_tokens=1500,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()
    time.sleep(0.5)
    decoded = prompt_evals(smollm2.engine)[1]
    time.sleep(0.5)
    assert prompt_evals(smollm2.engine)[1] == decoded  # nothing decodes any more
    reply = api.completions.create(
        model="smol", prompt="Hi", max_tokens=1
    )  # and the engine is free
    assert usage_of(reply).completion_tokens == 1


def test_gemma_completes_text(gemma3: RealWorker) -> None:
    reply = client(gemma3.url).completions.create(
        model="gemma3-270m",
        prompt="Q: What's the capital of France? Answer in one sentence.\nA:",
        temperature=0,
        max_tokens=16,
        stop=["\n"],
    )
    assert "Paris" in reply.choices[0].text
    assert reply.choices[0].finish_reason == "stop"
    assert "\n" not in reply.choices[0].text


def test_gemma_refuses_chat(gemma3: RealWorker) -> None:
    status, body = post(
        f"{gemma3.url}/v1/chat/completions", {"model": "gemma3-270m", "messages": QUESTION}
    )
    assert (status, body["error"]["code"]) == (400, "wrong_task")


async def test_cancelling_a_queued_request_frees_its_place_at_once(smollm2: RealWorker) -> None:
    engine = smollm2.engine
    story = SamplingParams(max_tokens=500, ignore_eos=True, temperature=0)
    running = engine.generate(await engine.tokenize("Tell me a story."), story)
    await anext(running)  # the engine thread is busy with it now
    queued = engine.generate(await engine.tokenize("Hi"), SamplingParams(max_tokens=3))
    assert engine.queue_depth == 1
    queued.cancel()
    assert engine.queue_depth == 0
    assert [text async for text in queued] == []
    running.cancel()
    assert running.finish_reason is None
