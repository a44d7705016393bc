"""Building the lower tiers a stack's ``cache`` section asks for, for one loaded model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from llama_cpp import Llama

from corral.config import CacheConfig, DiskTierConfig, StackConfig
from corral.errors import ConfigError
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.compat import ContextSetup, compat_digest, file_sha256
from corral.worker.kvstore.disk import DiskTier
from corral.worker.kvstore.redis_tier import RedisTier, connect
from corral.worker.kvstore.tier import Tier
from corral.worker.kvstore.tiered import LowerTiers
from corral.worker.kvstore.writer import BackgroundWriter

logger = logging.getLogger(__name__)


class TierPlaces(NamedTuple):
    """Where a worker's lower tiers live, from the stack around its ``cache`` section."""

    #: ``supervisor.run_dir``: a relative ``cache.disk.path`` is under it.
    run_dir: Path
    #: ``redis.url`` (``corral up`` fills it in when it starts redis-server).
    redis_url: str | None = None

    @classmethod
    def of(cls, stack: StackConfig) -> TierPlaces:
        return cls(Path(stack.supervisor.run_dir), stack.redis.url)

    def check(self, cache: CacheConfig) -> None:
        """ConfigError if ``cache`` asks for a tier these places cannot provide."""
        if cache.redis is not None and self.redis_url is None:
            raise ConfigError(
                "redis.url: cache.redis asks for a Redis tier but the stack gives no Redis URL "
                "(`corral up` fills it in when it starts redis-server; a worker started on its "
                "own needs redis.url set)"
            )


def disk_directory(disk: DiskTierConfig, run_dir: Path, model_name: str) -> Path:
    """The directory of one model's disk tier: ``<path>/<model>``, ``path`` under ``run_dir``
    when relative (so models never share a directory; replicas of one model do)."""
    base = Path(disk.path)
    if not base.is_absolute():
        base = run_dir / base
    return base / model_name.replace("/", "_")


def open_tiers(
    cache: CacheConfig,
    places: TierPlaces,
    *,
    llama: Llama,
    model_name: str,
    weights: Path,
    block_size: int,
    hashes: Callable[[Sequence[int]], list[int]],
    events: KVEventLog,
) -> LowerTiers | None:
    """The disk and Redis tiers ``cache`` asks for (None when it asks for neither)."""
    if cache.disk is None and cache.redis is None:
        return None
    places.check(cache)
    model_sha256 = file_sha256(weights, cache_dir=places.run_dir / "digests")
    compat = compat_digest(
        model_sha256, ContextSetup.of(llama, model_name=model_name, block_size=block_size)
    )
    chunk_blocks = max(1, cache.chunk_tokens // block_size)
    tiers: list[Tier] = []
    if cache.disk is not None:
        disk = DiskTier(
            disk_directory(cache.disk, places.run_dir, model_name),
            max_bytes=cache.disk.max_bytes,
            compat=compat,
            block_size=block_size,
            hashes=hashes,
            events=events,
        )
        disk.open()
        tiers.append(disk)
    if cache.redis is not None and places.redis_url is not None:
        client = connect(places.redis_url, timeout_s=cache.redis.timeout_s)
        tiers.append(
            RedisTier(
                client,
                compat=compat,
                block_size=block_size,
                chunk_blocks=chunk_blocks,
                max_bytes=cache.redis.max_bytes,
                ttl_s=cache.redis.ttl_s,
                events=events,
            )
        )
    logger.info(
        "KV tiers of %s: %s (chunks of %d tokens, compat %s)",
        model_name, ", ".join(t.name for t in tiers), chunk_blocks * block_size, compat.hex(),
    )
    return LowerTiers(
        tiers,
        compat=compat,
        block_size=block_size,
        chunk_tokens=cache.chunk_tokens,
        writer=BackgroundWriter(name=f"kv-writer:{model_name}"),
    )
