"""The default stack end to end: `corral up`, the official openai client, real models."""

from __future__ import annotations

import math
import os
import signal
import time
import urllib.error
import urllib.request

import openai
import orjson
import pytest
from tests.integration.conftest import RunningStack, stop_stack

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def client(default_stack: RunningStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{default_stack.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_models_lists_every_model_and_alias(client):
    ids = {model.id for model in client.models.list()}
    assert {"smollm2-135m-instruct", "gemma3-270m", "minilm-l6-v2"} <= ids
    assert {"smollm2", "chat", "gemma3", "completion", "embedding"} <= ids


def test_chat_answers_sensibly(client):
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, temperature=0, max_tokens=32
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 32
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_matches_non_stream(client):
    kwargs = dict(model="chat", messages=QUESTION, temperature=0, max_tokens=24)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_completion_on_gemma(client):
    reply = client.completions.create(model="gemma3-270m", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert reply.choices[0].text.strip()
    assert reply.usage.completion_tokens <= 8


def test_embeddings_shape_norm_and_similarity(client):
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    data = client.embeddings.create(model="embedding", input=sentences).data
    vectors = [item.embedding for item in data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def test_error_cases(client, default_stack):
    with pytest.raises(openai.NotFoundError, match="known models"):
        client.chat.completions.create(model="gpt-4", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="embedding"):
        client.chat.completions.create(model="minilm-l6-v2", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="completion"):
        client.chat.completions.create(model="gemma3-270m", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="'n'"):
        client.chat.completions.create(model="chat", messages=QUESTION, n=2)
    status, body = _post(f"{default_stack.base_url}/v1/chat/completions", b'{"model": "chat", "messages": [')
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = _post(f"{default_stack.base_url}/v1/completions",
                         orjson.dumps({"model": "completion", "prompt": "x" * (9 * 1024 * 1024)}))
    assert status == 413 and "error" in body


def test_killed_worker_is_skipped_restarted_and_nothing_outlives_ctrl_c(client, default_stack):
    """kill -9 one SmolLM2 replica: traffic keeps flowing, the supervisor restarts it, Ctrl-C leaves no process."""
    children = default_stack.children()
    smol = [pid for pid, cmd in children.items() if "--model smollm2-135m-instruct" in cmd]
    assert len(smol) == 2, children
    os.kill(smol[0], signal.SIGKILL)
    for _ in range(10):
        reply = client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=4)
        assert reply.choices[0].message.content is not None
    deadline = time.monotonic() + 60
    while "ready again" not in default_stack.output() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert "ready again" in default_stack.output(), default_stack.output()
    restarted = [pid for pid, cmd in default_stack.children().items() if "--model smollm2-135m-instruct" in cmd]
    assert len(restarted) == 2 and smol[0] not in restarted

    everything = set(default_stack.children())
    assert stop_stack(default_stack) == 0
    time.sleep(0.2)
    leftovers = [pid for pid in everything if _running(pid)]
    assert not leftovers, leftovers
