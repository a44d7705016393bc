"""Prefill/decode split end to end: `corral up` with one prefill and one decode SmolLM2 worker
and the Redis it starts; the client sees one ordinary response from the decode worker, which
took the prompt's KV from Redis instead of prefilling it, and answers as a worker that
prefilled the prompt itself does (greedy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import yaml
from tests.integration.conftest import RunningStack, stack_from_text

pytestmark = pytest.mark.slow

STACK = """
cache:
  chunk_tokens: 16
  redis: {}
redis:
  port: 0
models:
  - name: smollm2-135m-instruct
    aliases: [chat]
    task: chat
    engine: llamacpp
    source: smollm2-135m-instruct
    replicas: 2
    prefill_replicas: 1
    threads: 1
    context_length: 2048
"""
DOCUMENT = " ".join(f"Line {n}: the lighthouse on rock {n} was painted red and white in year {1900 + n}."
                    for n in range(24))


def ask(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "temperature": 0, "max_tokens": 12, **extra,
            "messages": [{"role": "system", "content": DOCUMENT}, {"role": "user", "content": question}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with stack_from_text(tmp_path_factory, "prefill-decode", STACK) as running:
        yield running


def roles(stack: RunningStack) -> tuple[str, str]:
    resolved = yaml.safe_load((stack.run_dir / "stack.resolved.yaml").read_text())
    (model,) = resolved["models"]
    (prefill,) = model["prefill_endpoints"]
    (decode,) = model["endpoints"]
    return prefill, decode


def prefills_ok(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("corral_router_prefills_total{") and 'outcome="ok"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_decode_worker_answers_from_the_prefill_workers_kv(stack: RunningStack) -> None:
    prefill, decode = roles(stack)
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        reply = client.post("/v1/chat/completions", json=ask("Which colour was the lighthouse on rock 7?"))
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-corral-endpoint"] == decode
        usage = reply.json()["usage"]
        assert usage["prompt_tokens"] > 400
        # All but the prompt's last partial chunk came from Redis (chunks of 16 tokens).
        assert usage["prompt_tokens_details"]["cached_tokens"] >= usage["prompt_tokens"] - 16
        assert prefills_ok(client) == 1.0
        split_answer = reply.json()["choices"][0]["message"]["content"]

    # The prefill worker, asked directly, computes the prompt itself: the same greedy answer.
    with httpx.Client(base_url=prefill, timeout=120) as client:
        alone = client.post("/v1/chat/completions", json=ask("Which colour was the lighthouse on rock 7?"))
        assert alone.json()["choices"][0]["message"]["content"] == split_answer


def test_a_stream_through_the_split_is_one_ordinary_stream(stack: RunningStack) -> None:
    _, decode = roles(stack)
    body = ask("In which year was rock 3 painted?", stream=True, stream_options={"include_usage": True})
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["x-corral-endpoint"] == decode
            frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        chunks = [orjson.loads(frame) for frame in frames[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text.strip()
        usage = chunks[-1]["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] >= usage["prompt_tokens"] - 16
        assert prefills_ok(client) == 2.0
