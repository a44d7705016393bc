"""A vLLM replica from a model's stack entry: the `vllm serve` command line, its
environment and LMCache's config file.

    vllm_launch(stack, model, role="both")  ->  VllmLaunch(args, env, lmcache_config)

The Kubernetes renderer puts ``args`` in the container's command, ``env`` in its
environment and ``lmcache_config`` (when not None) in a ConfigMap mounted at
``lmcache_config_path``. What maps to what:

==============================  ==========================================================
stack file                      vLLM / LMCache
==============================  ==========================================================
``source``                      ``vllm serve SOURCE`` (a Hugging Face id or a path)
``name`` + ``aliases``          ``--served-model-name NAME ALIAS...`` (vLLM answers to each;
                                the first is the one its responses carry)
``context_length``              ``--max-model-len``
``vllm.*``                      ``--tensor-parallel-size``, ``--pipeline-parallel-size``,
                                ``--quantization``, ``--kv-cache-dtype`` (unless auto),
                                ``--gpu-memory-utilization``, ``--max-num-seqs``,
                                ``--enable-prefix-caching`` / ``--no-enable-prefix-caching``
``vllm.speculative``            ``--speculative-config`` JSON: ``method`` (ngram,
                                draft_model, eagle, eagle3), ``num_speculative_tokens``,
                                ``model``, ``prompt_lookup_max`` / ``prompt_lookup_min``
routing policy ``kv``           ``--kv-events-config`` JSON (ZMQ publisher on
                                ``vllm.kv_events_port``, replay socket on
                                ``vllm.kv_events_replay_port``, topic ``kv-events``) and
                                ``--block-size`` = ``prefix.block_size``, so that vLLM's
                                blocks are the router's blocks
                                (:mod:`corral.router.vllm_kv_events`)
``cache`` (disk, redis, roles)  LMCache: ``--kv-transfer-config`` JSON
                                (``LMCacheConnectorV1``; ``kv_role`` kv_both, or
                                kv_producer for a prefill replica and kv_consumer for a
                                decode one) and its YAML config (``LMCACHE_CONFIG_FILE``):
                                ``chunk_tokens`` -> ``chunk_size``; ``ram_bytes`` ->
                                ``local_cpu`` + ``max_local_cpu_size`` (GiB); ``disk`` ->
                                ``local_disk`` (``file://`` URL) + ``max_local_disk_size``
                                (GiB); ``redis`` -> ``remote_url`` (the stack's
                                ``redis.url``, or the in-cluster one the renderer passes)
task ``embedding``              ``--runner pooling``
==============================  ==========================================================

The API key never appears on the command line (``ps`` and the pod spec would show it):
vLLM reads ``VLLM_API_KEY`` from its environment, exactly as ``--api-key``
(``vllm/entrypoints/openai/api_server.py``: ``args.api_key or envs.VLLM_API_KEY``). The
renderer sets :data:`API_KEY_ENV` from a Kubernetes Secret (``secretKeyRef``); this
module puts no key anywhere.

Sources relied on (read, not copied): vLLM ``vllm/engine/arg_utils.py`` (flag names; the
boolean flags take a ``--no-`` form), ``vllm/config/kv_events.py`` (``KVEventsConfig``:
``enable_kv_cache_events``, ``publisher``, ``endpoint``, ``replay_endpoint``, ``topic``),
``vllm/config/speculative.py`` (``SpeculativeConfig``: ``method`` in ngram, draft_model,
eagle, eagle3, ...; ``model``; ``num_speculative_tokens``; ``prompt_lookup_max/min``),
``vllm/config/cache.py`` (``block_size``, ``enable_prefix_caching``), the
``--kv-transfer-config`` of vLLM's LMCache examples (``kv_connector: LMCacheConnectorV1``,
``kv_role``); LMCache ``lmcache/v1/config.py`` (``chunk_size``, ``local_cpu``,
``max_local_cpu_size`` and ``max_local_disk_size`` in GB, ``local_disk`` as
``file:///path/``, ``remote_url``, ``remote_serde``; ``LMCACHE_CONFIG_FILE``) and its
Redis connector (``redis://`` and ``rediss://`` URLs). See also
../shared/reference/kv-cache.md.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import yaml

from corral.config import ModelConfig, SpeculativeConfig, StackConfig, VllmConfig
from corral.errors import ConfigError

Role = Literal["both", "prefill", "decode"]

#: The environment variable vLLM reads its API key from (set it from a Secret).
API_KEY_ENV = "VLLM_API_KEY"
#: The environment variable LMCache reads its config file's path from.
LMCACHE_CONFIG_ENV = "LMCACHE_CONFIG_FILE"
#: The ZMQ topic of the KV events (the router subscribes to it).
KV_EVENTS_TOPIC = "kv-events"
#: vLLM's connector class for LMCache.
LMCACHE_CONNECTOR = "LMCacheConnectorV1"
#: Where a relative ``cache.disk.path`` lands in the container (the renderer mounts it).
DEFAULT_CACHE_DIR = "/var/cache/corral"
#: CPU memory LMCache stages disk and Redis transfers through when ``cache.ram_bytes``
#: is 0 (the RAM tier is off, but LMCache still needs a buffer), in GiB.
STAGING_GIB = 1.0
#: Block sizes vLLM's GPU attention backends take (``--block-size``).
VLLM_BLOCK_SIZES = (8, 16, 32, 64, 128)

_KV_ROLES: Mapping[Role, str] = {
    "both": "kv_both",
    "prefill": "kv_producer",
    "decode": "kv_consumer",
}
_SPEC_METHODS: Mapping[str, str] = {
    "ngram": "ngram",
    "draft": "draft_model",
    "eagle": "eagle",
    "eagle3": "eagle3",
}


class VllmLaunch(NamedTuple):
    """One vLLM replica's process: command line, environment, LMCache's config file."""

    args: tuple[str, ...]
    env: Mapping[str, str]
    lmcache_config: str | None


def vllm_launch(
    stack: StackConfig,
    model: ModelConfig,
    *,
    role: Role = "both",
    port: int = 8000,
    lmcache_config_path: str = "/etc/corral/lmcache.yaml",
    redis_url: str | None = None,
    cache_dir: str = DEFAULT_CACHE_DIR,
) -> VllmLaunch:
    """The `vllm serve` command for one replica of ``model`` in ``role``.

    ``redis_url`` overrides ``stack.redis.url`` for LMCache's remote tier (in Kubernetes,
    the in-cluster Redis Service); ``cache_dir`` is where a relative ``cache.disk.path``
    goes. Raises :class:`ConfigError`, naming the field, when the stack asks for
    something vLLM cannot do (e.g. the ``kv`` policy with prefix caching off).
    """
    where = f"models ({model.name})"
    if model.engine != "vllm":
        raise ConfigError(
            f"{where}.engine: '{model.engine}' is not vllm; only vLLM models have a vllm command"
        )
    config = model.vllm or VllmConfig()
    args: list[str] = [
        "vllm", "serve", model.source,
        "--served-model-name", *model.served_names,
        "--host", "0.0.0.0",
        "--port", str(port),
        "--tensor-parallel-size", str(config.tensor_parallel_size),
        "--pipeline-parallel-size", str(config.pipeline_parallel_size),
    ]  # fmt: skip
    if config.quantization is not None:
        args += ["--quantization", config.quantization]
    if config.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", config.kv_cache_dtype]
    args += ["--max-model-len", str(model.context_length)]
    args += ["--gpu-memory-utilization", repr(config.gpu_memory_utilization)]
    if config.max_num_seqs is not None:
        args += ["--max-num-seqs", str(config.max_num_seqs)]
    args.append(
        "--enable-prefix-caching" if config.enable_prefix_caching else "--no-enable-prefix-caching"
    )
    if model.task == "embedding":
        args += ["--runner", "pooling"]
        if config.speculative is not None:
            raise ConfigError(
                f"{where}.vllm.speculative: an embedding model generates nothing to speculate on"
            )
    elif stack.router.routing.policy_for(model.name) == "kv":
        args += _kv_event_args(stack, model, config)
    if config.speculative is not None:
        args += ["--speculative-config", _json(speculative_config(config.speculative))]
    env: dict[str, str] = {}
    lmcache_config: str | None = None
    if uses_lmcache(stack, model, role):
        lmcache_config = lmcache_yaml(stack, model, redis_url=redis_url, cache_dir=cache_dir)
        args += ["--kv-transfer-config", _json(kv_transfer_config(role))]
        env[LMCACHE_CONFIG_ENV] = lmcache_config_path
        # vLLM's prefix hashes start from a random NONE_HASH unless the seed is fixed:
        # fixed, every replica hashes a prefix the same way (kv-cache.md).
        env["PYTHONHASHSEED"] = "0"
    return VllmLaunch(tuple(args), env, lmcache_config)


def uses_lmcache(stack: StackConfig, model: ModelConfig, role: Role = "both") -> bool:
    """Whether the replica runs LMCache: ``vllm.lmcache``, else when the cache section has
    a tier beyond vLLM's own (disk, Redis) or the model splits prefill from decode."""
    where = f"models ({model.name})"
    config = model.vllm or VllmConfig()
    split = role != "both" or model.prefill_replicas > 0 or bool(model.prefill_endpoints)
    if split and config.lmcache is False:
        raise ConfigError(
            f"{where}.vllm.lmcache: prefill and decode replicas hand the KV over through LMCache; "
            "leave it on (or absent) for a model with prefill workers"
        )
    if config.lmcache is not None:
        return config.lmcache
    return split or stack.cache.disk is not None or stack.cache.redis is not None


def kv_events_config(config: VllmConfig) -> dict[str, Any]:
    """``--kv-events-config``: vLLM publishes its block events on ZMQ, all interfaces."""
    events: dict[str, Any] = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": f"tcp://*:{config.kv_events_port}",
    }
    if config.kv_events_replay_port is not None:
        events["replay_endpoint"] = f"tcp://*:{config.kv_events_replay_port}"
    events["topic"] = KV_EVENTS_TOPIC
    return events


def speculative_config(spec: SpeculativeConfig) -> dict[str, Any]:
    """``--speculative-config``: vLLM's SpeculativeConfig fields, None ones left out."""
    out: dict[str, Any] = {"method": _SPEC_METHODS[spec.method]}
    if spec.model is not None:
        out["model"] = spec.model
    out["num_speculative_tokens"] = spec.num_speculative_tokens
    if spec.prompt_lookup_max is not None:
        out["prompt_lookup_max"] = spec.prompt_lookup_max
    if spec.prompt_lookup_min is not None:
        out["prompt_lookup_min"] = spec.prompt_lookup_min
    return out


def kv_transfer_config(role: Role) -> dict[str, str]:
    """``--kv-transfer-config``: LMCache as vLLM's KV connector, in the replica's role."""
    return {"kv_connector": LMCACHE_CONNECTOR, "kv_role": _KV_ROLES[role]}


def lmcache_settings(
    stack: StackConfig,
    model: ModelConfig,
    *,
    redis_url: str | None = None,
    cache_dir: str = DEFAULT_CACHE_DIR,
) -> dict[str, Any]:
    """LMCache's config keys from the stack's cache section (sizes in GiB, as LMCache's GB)."""
    cache = stack.cache
    settings: dict[str, Any] = {
        "chunk_size": cache.chunk_tokens,
        "local_cpu": cache.ram_bytes > 0,
        "max_local_cpu_size": _gib(cache.ram_bytes) if cache.ram_bytes > 0 else STAGING_GIB,
    }
    if cache.disk is not None:
        path = posixpath.join(cache_dir, cache.disk.path)  # an absolute path stays as it is
        settings["local_disk"] = f"file://{posixpath.normpath(path)}/"
        settings["max_local_disk_size"] = _gib(cache.disk.max_bytes)
    if cache.redis is not None:
        url = redis_url or stack.redis.url
        if url is None:
            raise ConfigError(
                f"redis.url: model '{model.name}' runs on vLLM, whose LMCache reaches the shared KV "
                "tier at a URL; set redis.url (`corral deploy` passes its in-cluster Redis)"
            )
        settings["remote_url"] = url
        settings["remote_serde"] = "naive"
    return settings


def lmcache_yaml(
    stack: StackConfig,
    model: ModelConfig,
    *,
    redis_url: str | None = None,
    cache_dir: str = DEFAULT_CACHE_DIR,
) -> str:
    """LMCache's config file (the text the renderer mounts at ``LMCACHE_CONFIG_FILE``)."""
    settings = lmcache_settings(stack, model, redis_url=redis_url, cache_dir=cache_dir)
    return str(yaml.safe_dump(settings, sort_keys=False))


def _kv_event_args(stack: StackConfig, model: ModelConfig, config: VllmConfig) -> list[str]:
    where = f"models ({model.name})"
    if not config.enable_prefix_caching:
        raise ConfigError(
            f"{where}.vllm.enable_prefix_caching: the 'kv' routing policy follows vLLM's prefix "
            "cache, which is off; turn it on or route this model with another policy"
        )
    block_size = stack.prefix.block_size
    if block_size not in VLLM_BLOCK_SIZES:
        raise ConfigError(
            f"prefix.block_size: {block_size} is not a vLLM block size "
            f"({', '.join(map(str, VLLM_BLOCK_SIZES))}); the 'kv' policy of model '{model.name}' "
            "needs vLLM's blocks to be the router's"
        )
    return ["--block-size", str(block_size), "--kv-events-config", _json(kv_events_config(config))]


def _gib(size_bytes: int) -> float:
    return max(round(size_bytes / 1024**3, 3), 0.001)


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))
