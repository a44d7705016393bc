"""The router's idle timeout: a worker silent too long before its first byte, or between chunks."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from tests.fakes.engine import Behaviour, FakeEngine
from tests.router.support import make_stack, serving, serving_router

pytestmark = pytest.mark.slow


async def test_silence_before_the_first_byte_is_a_504() -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(ttft_s=2.0))
    async with serving(engine) as urls, serving_router(make_stack(urls, idle_timeout_s=0.3)) as (router, _):
        async with aiohttp.ClientSession() as session, session.post(
            f"{router}/v1/completions", json={"model": "chat", "prompt": "x", "max_tokens": 2}
        ) as response:
            body = await response.json()
    assert response.status == 504 and "did not answer in time" in body["error"]["message"]


async def test_silence_between_chunks_ends_the_stream_with_an_error_frame() -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(itl_s=2.0))
    payload = {"model": "chat", "messages": [], "max_tokens": 3, "stream": True}
    async with serving(engine) as urls, serving_router(make_stack(urls, idle_timeout_s=0.5)) as (router, _):
        async with aiohttp.ClientSession() as session, session.post(
            f"{router}/v1/chat/completions", json=payload
        ) as response:
            text = (await response.read()).decode()
    assert response.status == 200
    frames = [f.removeprefix("data: ") for f in text.split("\n\n") if f]
    assert "[DONE]" not in frames
    assert "error" in orjson.loads(frames[-1])
