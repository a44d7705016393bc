"""Worker metrics through the real app and a fake engine: what one request records."""

from __future__ import annotations

import aiohttp
import orjson
from prometheus_client import CollectorRegistry
from tests.worker.support import FakeTextEngine, model_config, running, wait_until

from corral.metrics import WorkerMetrics
from corral.observability.top import parse_samples
from corral.worker.app import create_app

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "say hello"}]}


async def _scrape(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return parse_samples(await response.text())


def _value(samples: dict, name: str, **labels: str) -> float:
    want = tuple(sorted({"model": "test-model", **labels}.items()))
    return samples[(name, want)]


async def test_a_streamed_request_records_ttft_once_and_one_gap_per_piece(fake_engine: FakeTextEngine) -> None:
    metrics = WorkerMetrics(CollectorRegistry(), model="test-model", with_process=False)
    async with running(create_app(model_config(), fake_engine, metrics=metrics)) as url, aiohttp.ClientSession() as session:
        await wait_until(lambda: fake_engine.loaded)
        async with session.post(f"{url}/v1/chat/completions", data=orjson.dumps({**CHAT, "stream": True})) as response:
            await response.read()
        async with session.post(f"{url}/v1/chat/completions", data=orjson.dumps(CHAT)) as response:
            await response.read()
        samples = await _scrape(session, url)
    pieces = len(fake_engine.script)
    assert _value(samples, "corral_worker_time_to_first_token_seconds_count") == 2
    assert _value(samples, "corral_worker_inter_token_latency_seconds_count") == 2 * (pieces - 1)
    assert _value(samples, "corral_worker_requests_total", outcome="stop") == 2
    assert _value(samples, "corral_worker_generation_tokens_total") == 2 * pieces
    assert _value(samples, "corral_worker_prompt_tokens_total") == 2 * 2  # "say hello": two fake tokens
    assert _value(samples, "corral_worker_cached_prompt_tokens_total") == 2  # the fake reuses one token
    assert _value(samples, "corral_worker_queue_capacity") == model_config().queue_size
    assert _value(samples, "corral_worker_queue_depth") == 0
    assert _value(samples, "corral_worker_running_sequences") == 0
    assert _value(samples, "corral_worker_model_load_seconds") >= 0


async def test_a_rejected_request_is_counted(fake_engine: FakeTextEngine) -> None:
    fake_engine.capacity = 0
    async with running(create_app(model_config(), fake_engine)) as url, aiohttp.ClientSession() as session:
        await wait_until(lambda: fake_engine.loaded)
        async with session.post(f"{url}/v1/chat/completions", data=orjson.dumps(CHAT)) as response:
            assert response.status == 503
        samples = await _scrape(session, url)
    assert _value(samples, "corral_worker_requests_total", outcome="rejected") == 1
