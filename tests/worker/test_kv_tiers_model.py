"""The lower KV tiers with the real SmolLM2: what a hit generates equals a cold prefill, per tier.

Each engine is a fresh ``Llama`` (a second worker, as far as its KV is concerned): one that
stored a prefix, then others that load it from the disk tier (after a restart) or from
Redis, whose greedy tokens must equal the cold run's token for token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (the fixture)

from corral.config import CacheConfig, DiskTierConfig, ModelConfig, RedisTierConfig
from corral.worker.engine import SamplingParams
from corral.worker.kvstore.settings import TierPlaces, disk_directory
from corral.worker.llamacpp import LlamaCppEngine

pytestmark = pytest.mark.slow

CHUNK = 64  # tokens: small, so that short prompts span several chunks
STORY = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, lit the great "
    "lamp, and wrote the weather, the ships and the birds into his logbook. "
) * 5 + "Then one night a stranger knocked at the door and asked"
OTHER = "A gardener planted tomatoes and beans in raised beds."
MODEL = ModelConfig.model_validate(
    {
        "name": "smol",
        "task": "completion",
        "engine": "llamacpp",
        "source": "smollm2-135m-instruct",
        "threads": 2,
        "context_length": 1024,
    }
)


class Run(NamedTuple):
    text: str
    ids: list[int]
    prompt_tokens: int
    cached_tokens: int


async def run(engine: LlamaCppEngine, prompt: str, max_tokens: int = 12) -> Run:
    tokens = await engine.tokenize(prompt)
    stream = engine.generate(tokens, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))
    text = "".join([piece async for piece in stream])
    deadline = time.monotonic() + 30
    while engine._current is not None or engine.queue_depth:  # the bookkeeping after the answer
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert engine.flush_kv_writes(30)
    llama = engine.llama
    assert llama is not None
    ids = [int(t) for t in llama.input_ids[len(tokens) : llama.n_tokens]]
    return Run(text, ids, len(tokens), stream.usage.cached_tokens)


@contextlib.asynccontextmanager
async def engine(
    places: TierPlaces, *, ram_bytes: int = 256 << 20, disk: bool = False, redis: bool = False,
    sync_store: bool = False,
) -> AsyncIterator[LlamaCppEngine]:
    cache = CacheConfig(
        ram_bytes=ram_bytes,
        min_tokens=32,
        chunk_tokens=CHUNK,
        disk=DiskTierConfig(path="kv-cache") if disk else None,
        redis=RedisTierConfig(timeout_s=2.0) if redis else None,
    )
    worker = LlamaCppEngine(MODEL, cache=cache, places=places, sync_store=sync_store)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.aclose()


def tier(worker: LlamaCppEngine, name: str) -> dict[str, int]:
    return worker.prefix_stats.to_dict()["tiers"][name]  # type: ignore[no-any-return]


def media(worker: LlamaCppEngine) -> set[str]:
    return {getattr(e, "medium", "") for e in worker.kv_events.snapshot().events} - {""}


async def test_a_hit_in_each_tier_generates_what_a_cold_prefill_generates(
    tmp_path: Path, redis_server: RedisServer,  # noqa: F811
) -> None:
    places = TierPlaces(tmp_path, redis_server.url)
    async with engine(places, disk=True, redis=True) as first:
        cold = await run(first, STORY)
        assert cold.cached_tokens == 0 and cold.prompt_tokens > 2 * CHUNK
        assert media(first) == {"ram", "disk", "redis"}
        assert tier(first, "disk")["stored"] == 1 and tier(first, "redis")["stored"] == 1
        await run(first, OTHER)  # another prompt takes the context
        from_ram = await run(first, STORY)
        assert tier(first, "ram")["hits"] == 1 and from_ram.ids == cold.ids
    async with engine(places, ram_bytes=0, disk=True) as restarted:  # the same directory
        from_disk = await run(restarted, STORY)
        assert tier(restarted, "disk")["hits"] == 1
        assert from_disk.cached_tokens >= cold.prompt_tokens // CHUNK * CHUNK
        assert from_disk.ids == cold.ids and from_disk.text == cold.text
    async with engine(places, ram_bytes=0, redis=True) as second_worker:
        from_redis = await run(second_worker, STORY)
        assert tier(second_worker, "redis")["hits"] == 1
        assert from_redis.cached_tokens >= cold.prompt_tokens // CHUNK * CHUNK
        assert from_redis.ids == cold.ids and from_redis.text == cold.text


async def test_a_prompt_sharing_only_the_first_chunks_loads_them_from_redis(
    tmp_path: Path, redis_server: RedisServer,  # noqa: F811
) -> None:
    places = TierPlaces(tmp_path, redis_server.url)
    variant = STORY[: len(STORY) // 2] + " The harbour master counted the boats twice"
    async with engine(places, ram_bytes=0) as reference:
        cold = await run(reference, variant)
    async with engine(places, redis=True) as first:
        await run(first, STORY)
    async with engine(places, redis=True) as second:
        warm = await run(second, variant)
        assert warm.cached_tokens >= CHUNK and tier(second, "redis")["hits"] == 1
        assert warm.ids == cold.ids


async def test_a_redis_outage_recomputes_and_the_tier_comes_back(
    tmp_path: Path, redis_server: RedisServer,  # noqa: F811
) -> None:
    places = TierPlaces(tmp_path, redis_server.url)
    async with engine(places, ram_bytes=0, redis=True) as worker:
        cold = await run(worker, STORY)
        await run(worker, OTHER)
        redis_server.stop()
        during = await run(worker, STORY)
        assert during.ids == cold.ids and during.cached_tokens == 0
        assert tier(worker, "redis")["errors"]["unavailable"] >= 1
        redis_server.start()
        worker_tiers = worker._prefix.tiers
        assert worker_tiers is not None
        for lower in worker_tiers.tiers:  # skip the backoff rather than sleep through it
            lower._down_until = 0.0  # type: ignore[attr-defined]
        await run(worker, OTHER)
        assert (await run(worker, STORY)).cached_tokens == 0  # Redis came back empty: stored again
        await run(worker, OTHER)
        after = await run(worker, STORY)
        assert after.ids == cold.ids and after.cached_tokens > 0


async def test_a_damaged_file_is_recomputed_and_replaced(
    tmp_path: Path, redis_server: RedisServer,  # noqa: F811
) -> None:
    places = TierPlaces(tmp_path, None)
    async with engine(places, ram_bytes=0, disk=True) as first:
        cold = await run(first, STORY)
    directory = disk_directory(DiskTierConfig(path="kv-cache"), tmp_path, MODEL.name)
    (path,) = directory.glob("*.kv")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    async with engine(places, ram_bytes=0, disk=True) as second:
        again = await run(second, STORY)
        assert again.ids == cold.ids and again.cached_tokens == 0
        assert tier(second, "disk")["errors"] == {"corrupt": 1}
        assert len(list(directory.glob("*.kv"))) == 1  # written again, whole


async def test_a_synchronous_store_is_in_redis_when_the_answer_ends(
    tmp_path: Path, redis_server: RedisServer,  # noqa: F811
) -> None:
    places = TierPlaces(tmp_path, redis_server.url)
    async with engine(places, ram_bytes=0, redis=True, sync_store=True) as prefill:
        tokens = await prefill.tokenize(STORY)
        stream = prefill.generate(tokens, SamplingParams(max_tokens=1, temperature=0))
        assert [piece async for piece in stream]
        assert tier(prefill, "redis")["stored"] == 1  # before anyone waited for the writer
