"""The kv policy against a real corral worker: the router predicts what the worker reuses.

A real SmolLM2 worker process (``corral worker``) publishes its KV events; the router,
on a real port, follows them and tokenizes and hashes each chat on its own. The
prediction it states in ``x-corral-predicted-cached-tokens`` must agree with the
``cached_tokens`` the worker reports, within one block.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.fakes.server import closed_port_url
from tests.router.support import eventually, serving_router

from corral.config import parse_stack
from corral.prefix.hashing import block_hashes, token_bytes
from corral.prefix.prompt import read_prompt

pytestmark = pytest.mark.slow

BLOCK = 16
MODEL: dict[str, Any] = {
    "name": "smollm2-135m-instruct",
    "task": "chat",
    "engine": "llamacpp",
    "source": "smollm2-135m-instruct",
    "threads": 2,
    "context_length": 1024,
}


@contextlib.contextmanager
def worker(tmp_path: Path) -> Iterator[str]:
    """``corral worker`` on a free loopback port; yields its URL once it is healthy."""
    url = closed_port_url()
    port = url.rsplit(":", 1)[1]
    stack = tmp_path / "worker.yaml"
    stack.write_text(yaml.safe_dump({"prefix": {"block_size": BLOCK}, "models": [MODEL]}))
    command = [sys.executable, "-m", "corral", "worker", "-m", MODEL["name"], "-s", str(stack)]
    process = subprocess.Popen([*command, "--port", port], env={**os.environ})
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)


async def healthy(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/health") as reply:
                    if reply.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


async def chat(router: str, messages: list[dict[str, str]]) -> tuple[int, int, str]:
    body: dict[str, Any] = {
        "model": MODEL["name"],
        "messages": messages,
        "max_tokens": 4,
        "temperature": 0,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(router + "/v1/chat/completions", json=body) as reply:
            assert reply.status == 200, await reply.text()
            data = await reply.json()
            predicted = int(reply.headers["x-corral-predicted-cached-tokens"])
    answer = data["choices"][0]["message"]["content"]
    return predicted, data["usage"]["prompt_tokens_details"]["cached_tokens"], answer


async def test_predictions_agree_with_a_real_worker(tmp_path: Path) -> None:
    with worker(tmp_path) as url:
        await healthy(url)
        stack = parse_stack(
            {
                "prefix": {"block_size": BLOCK},
                "router": {"routing": {"policy": "kv"}, "health_interval_s": 0.2},
                "models": [{**MODEL, "replicas": 0, "endpoints": [url]}],
            }
        )
        async with serving_router(stack) as (router, app):
            await eventually(lambda: app.routing.subscriber is not None, 10)
            subscriber = app.routing.subscriber
            assert subscriber is not None
            await eventually(lambda: subscriber.connects.get(url, 0) >= 1, 30)
            messages = [
                {"role": "system", "content": "You are a concise assistant. " * 6},
                {"role": "user", "content": "Name three colours of the rainbow, please."},
            ]
            first, reused, answer = await chat(router, messages)
            assert first == 0
            await eventually(lambda: app.routing.index.blocks(url) > 0, 30)
            seen = []
            for question in ("And two more?", "Which one is your favourite, and why?"):
                messages += [
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": question},
                ]
                before = app.routing.index.blocks(url)
                predicted, reused, answer = await chat(router, messages)
                seen.append((predicted, reused))
                assert predicted >= 3 * BLOCK  # at least the system prompt and first question
                assert abs(predicted - reused) < BLOCK, seen

                def grown(before: int = before) -> bool:
                    return app.routing.index.blocks(url) > before

                await eventually(grown, 30)
            assert seen[1][0] > seen[0][0]  # the conversation grew, and so did the reuse
            counts = app.routing.selfcheck.snapshot()[MODEL["name"]]
            assert counts["over"] == counts["under"] == 0
            # The worker's events carried the blocks' tokens: the router knows what follows
            # the blocks it holds, as text (a new question need not be tokenized).
            tokenizer = app.routing.tokenizers[MODEL["name"]]
            prompt = read_prompt("/v1/chat/completions", {"messages": messages})
            assert prompt is not None
            tokens = tokenizer.tokenize(prompt)
            assert tokens is not None
            hashes = block_hashes(tokens, block_size=BLOCK, seed=MODEL["name"])
            for number, parent in enumerate(hashes[:-1]):
                child = token_bytes(tokens[(number + 1) * BLOCK : (number + 2) * BLOCK])
                assert child in (app.routing.index.followers.children(parent) or []), number
