"""The stack file: one YAML document validated once into :class:`StackConfig`.

This module is the only reader of stack files. The CLI, the supervisor, the router,
the workers and (later) the Kubernetes renderer all take the validated, frozen model
or one of its sub-configs; none of them parses YAML or environment on its own.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corral.errors import ConfigError

Task = Literal["chat", "completion", "embedding"]
EngineKind = Literal["llamacpp", "onnx-embed", "vllm"]
RoutingPolicyName = Literal["round_robin", "least_loaded", "session", "prefix", "kv"]

#: Which engine can serve which task.
ENGINE_TASKS: dict[str, frozenset[str]] = {
    "llamacpp": frozenset({"chat", "completion"}),
    "onnx-embed": frozenset({"embedding"}),
    "vllm": frozenset({"chat", "completion", "embedding"}),
}
#: Engines that `corral up` can start on this machine (vLLM runs elsewhere: give endpoints).
LOCAL_ENGINES = frozenset({"llamacpp", "onnx-embed"})

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_URL_RE = re.compile(r"^https?://[^/\s]+(/\S*)?$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


KvCacheDtype = Literal["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_ds_mla"]
_GPU_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_QUANTIZATION_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class VllmConfig(_Frozen):
    """How a vLLM replica is started (`vllm serve` flags) when corral deploys it, e.g. as
    written by `corral plan --emit`. The model's ``context_length`` is vLLM's --max-model-len."""

    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    pipeline_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    quantization: str | None = Field(default=None, description="vLLM --quantization (fp8, awq, ...); None: the checkpoint's")
    kv_cache_dtype: KvCacheDtype = "auto"
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_num_seqs: Annotated[int | None, Field(ge=1, le=65_536)] = None
    enable_prefix_caching: bool = True

    @field_validator("quantization")
    @classmethod
    def _check_quantization(cls, value: str | None) -> str | None:
        if value is not None and not _QUANTIZATION_RE.match(value):
            raise ValueError("must be a vLLM quantization method name such as fp8, awq or gptq")
        return value


class GpuConfig(_Frozen):
    """The GPUs one replica of a vLLM model needs: a target for `corral deploy`, unused by `corral up`."""

    type: str = Field(description="GPU kind, e.g. l40s, h100, h200 (see `corral plan`)")
    count: Annotated[int, Field(ge=1, le=64)] = 1
    instance: str | None = Field(default=None, description="cloud instance type the plan picked, e.g. g6e.xlarge")

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        if not _GPU_TYPE_RE.match(value):
            raise ValueError("must be a lower-case GPU name such as l40s or h100")
        return value


class ModelConfig(_Frozen):
    """One served model: what it is, which engine runs it, how many replicas."""

    name: str
    aliases: tuple[str, ...] = ()
    task: Task
    engine: EngineKind
    source: str = Field(description="a file path, or a packaged model name (see corral.sources)")
    tokenizer: str | None = Field(
        default=None, description="tokenizer.json for an onnx-embed file source (packaged ones know theirs)"
    )
    replicas: Annotated[int, Field(ge=0, le=64)] = 1
    threads: Annotated[int, Field(ge=1, le=256)] = 1
    context_length: Annotated[int, Field(ge=64, le=1_048_576)] = 2048
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 32
    max_tokens_cap: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="largest max_tokens a request may ask for (the router refuses more with 400)"
    )
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    endpoints: tuple[str, ...] = Field(
        default=(),
        description="base URLs of workers started outside this stack (static discovery)",
    )
    prefill_replicas: Annotated[int, Field(ge=0, le=64)] = Field(
        default=0,
        description="of `replicas`, how many only prefill (and store the KV in cache.redis); the rest decode",
    )
    prefill_endpoints: tuple[str, ...] = Field(
        default=(), description="base URLs of prefill workers started outside this stack"
    )
    vllm: VllmConfig | None = Field(default=None, description="vLLM settings, for engine vllm")
    gpu: GpuConfig | None = Field(default=None, description="GPUs per replica, for engine vllm")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be 1-128 characters of letters, digits and . _ : / -")
        return value

    @field_validator("aliases")
    @classmethod
    def _check_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alias in value:
            if not _NAME_RE.match(alias):
                raise ValueError(f"alias '{alias}' must be letters, digits and . _ : / -")
        return value

    @field_validator("endpoints", "prefill_endpoints")
    @classmethod
    def _check_endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not _URL_RE.match(url):
                raise ValueError(f"endpoint '{url}' is not an http(s) URL")
        return tuple(url.rstrip("/") for url in value)

    @model_validator(mode="after")
    def _check_engine(self) -> ModelConfig:
        if self.task not in ENGINE_TASKS[self.engine]:
            allowed = ", ".join(sorted(ENGINE_TASKS[self.engine]))
            raise ValueError(f"engine '{self.engine}' cannot serve task '{self.task}' (it serves: {allowed})")
        if self.replicas == 0 and not self.endpoints:
            raise ValueError("replicas is 0 and no endpoints are given: nothing would serve this model")
        if self.prefill_replicas or self.prefill_endpoints:
            if self.task == "embedding":
                raise ValueError("prefill_replicas: an embedding model has no decode to split off")
            if self.prefill_replicas >= self.replicas and not self.endpoints:
                raise ValueError(
                    f"prefill_replicas ({self.prefill_replicas}) must leave at least one of "
                    f"replicas ({self.replicas}) to decode"
                )
        for part, value in (("vllm", self.vllm), ("gpu", self.gpu)):
            if value is not None and self.engine != "vllm":
                raise ValueError(f"{part}: applies to engine 'vllm' only (this model's engine is '{self.engine}')")
        if self.vllm is not None and self.gpu is not None:
            per_replica = self.vllm.tensor_parallel_size * self.vllm.pipeline_parallel_size
            if self.gpu.count != per_replica:
                raise ValueError(
                    f"gpu.count ({self.gpu.count}) must equal vllm.tensor_parallel_size x pipeline_parallel_size "
                    f"({self.vllm.tensor_parallel_size} x {self.vllm.pipeline_parallel_size} = {per_replica})"
                )
        if self.engine not in LOCAL_ENGINES and self.replicas > 0 and self.gpu is None:
            raise ValueError(
                f"engine '{self.engine}' is not started by corral on this machine; "
                "set replicas: 0 and list its endpoints, or give gpu: (type, count) for `corral deploy`"
            )
        return self

    @property
    def served_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def decode_replicas(self) -> int:
        """Replicas that generate (all of them unless some only prefill)."""
        return self.replicas - self.prefill_replicas


class RoutingWeights(_Frozen):
    """How much each scorer counts (scores are 0..1; the endpoint with the highest sum wins).

    ``prefix``: share of the prompt's blocks the endpoint holds (``prefix`` and ``kv``);
    ``load``: fewest in-flight requests; ``queue``: fewest prompt tokens still to prefill
    (``session``, ``prefix``, ``kv``); ``session``: the endpoint the session used last
    (``session``).
    """

    prefix: Annotated[float, Field(ge=0)] = 2.0
    load: Annotated[float, Field(ge=0)] = 1.0
    queue: Annotated[float, Field(ge=0)] = 1.0
    session: Annotated[float, Field(ge=0)] = 3.0


class RoutingConfig(_Frozen):
    """How the router picks an endpoint: a policy per model, and what the policies share.

    Policies: ``round_robin``, ``least_loaded``, ``session`` (sticky by ``session_header``
    or the request's ``user``), ``prefix`` (approximate: learns which endpoint saw which
    prompt text), ``kv`` (exact: tokenizes like the worker and follows its KV events).
    """

    policy: RoutingPolicyName = "least_loaded"
    models: dict[str, RoutingPolicyName] = Field(
        default_factory=dict, description="per-model policy, overriding `policy` (model name -> policy)"
    )
    weights: RoutingWeights = RoutingWeights()
    session_header: str = Field(default="x-session-id", pattern=r"^[A-Za-z0-9-]{1,64}$")
    max_sessions: Annotated[int, Field(ge=1)] = 100_000
    prefix_block_chars: Annotated[int, Field(ge=8, le=65_536)] = 64
    index_max_blocks: Annotated[int, Field(ge=1)] = 1_000_000
    index_max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    tokenizer_threads: Annotated[int, Field(ge=1, le=64)] = 1
    tokenizer_cache_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024
    kv_reconnect_s: Annotated[float, Field(gt=0)] = 0.25
    kv_reconnect_max_s: Annotated[float, Field(gt=0)] = 10.0

    @field_validator("session_header")
    @classmethod
    def _lower_header(cls, value: str) -> str:
        return value.lower()

    def policy_for(self, model: str) -> RoutingPolicyName:
        """The policy that routes ``model`` (its canonical name)."""
        return self.models.get(model, self.policy)


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: Environment variable with API keys as ``name:key`` pairs, comma-separated (all models).
API_KEYS_ENV = "CORRAL_API_KEYS"


class LimitsConfig(_Frozen):
    """Per API key or per model: over a limit the router answers 429 with Retry-After."""

    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="prompt (estimated) + max_tokens reserved at admission, then the actual usage"
    )
    concurrent_requests: Annotated[int, Field(ge=1)] | None = None


class ApiKeyConfig(_Frozen):
    """One API key, stored as the hex SHA-256 of the key (`corral` never keeps the key)."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    sha256: str
    models: tuple[str, ...] = Field(default=(), description="names or aliases it may use; empty: all")
    limits: LimitsConfig = LimitsConfig()

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str) -> str:
        if not _SHA256_RE.match(value):
            raise ValueError("must be 64 lower-case hex digits: the SHA-256 of the key (sha256sum)")
        return value


class AuthConfig(_Frozen):
    """When any key is configured, every OpenAI endpoint needs ``Authorization: Bearer <key>``."""

    keys: tuple[ApiKeyConfig, ...] = ()


class RouterConfig(_Frozen):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    routing: RoutingConfig = RoutingConfig()
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    health_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    request_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    idle_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0, description="longest silence from a worker: before its first byte, or between chunks"
    )
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    queue_size: Annotated[int, Field(ge=0, le=100_000)] = Field(
        default=64, description="requests per model that wait in the router when its workers are full; then 503"
    )
    queue_wait_s: Annotated[float, Field(gt=0)] = Field(default=60.0, description="longest wait in that queue")
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="failed answers in a row that eject an endpoint until a health check passes"
    )
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    auth: AuthConfig = AuthConfig()
    shared_limits: bool = Field(
        default=False, description="count rate limits in the stack's Redis, so several router replicas share them"
    )
    model_limits: dict[str, LimitsConfig] = Field(
        default_factory=dict, description="model name -> limits shared by all its callers"
    )


class DiskTierConfig(_Frozen):
    """Prefix KV states in a local directory: byte-bounded, atomic writes, kept across restarts."""

    path: str = Field(default="kv-cache", description="directory; a relative path is under supervisor.run_dir")
    max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 8 * 1024**3


class RedisTierConfig(_Frozen):
    """Prefix KV states in the stack's Redis (``redis:``), shared by every worker of a model."""

    max_bytes: Annotated[int, Field(ge=1024 * 1024)] = Field(
        default=2 * 1024**3, description="bytes of KV states all workers together keep there (LRU)"
    )
    ttl_s: Annotated[float, Field(gt=0)] = Field(default=24 * 3600.0, description="a state unused this long expires")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="slower Redis calls count as a miss: the worker recomputes"
    )


class CacheConfig(_Frozen):
    """Prefix KV states kept beyond a worker's live context: RAM, then disk, then Redis.

    corral's llama.cpp workers implement it; for vLLM workers the same section becomes
    LMCache settings (`corral deploy`)."""

    ram_bytes: Annotated[int, Field(ge=0, description="RAM tier per worker; 0 turns the RAM tier off")] = 512 * 1024**2
    min_tokens: Annotated[int, Field(ge=1, description="shorter prompt prefixes are not stored")] = 64
    chunk_tokens: Annotated[int, Field(ge=1, le=65_536)] = Field(
        default=256, description="disk and Redis keep prefixes cut at multiples of this many tokens"
    )
    disk: DiskTierConfig | None = Field(default=None, description="a local disk tier; absent: none")
    redis: RedisTierConfig | None = Field(default=None, description="a shared Redis tier; absent: none")


class RedisConfig(_Frozen):
    """The stack's Redis: the shared KV tier and rate limits shared by router replicas.

    Used only when ``cache.redis`` or ``router.shared_limits`` asks for it."""

    url: str | None = Field(
        default=None, description="redis://host:port/db of your Redis; absent: `corral up` starts redis-server"
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(default=6379, description="port of the one corral starts")
    max_memory_bytes: Annotated[int, Field(ge=1024 * 1024)] = Field(
        default=4 * 1024**3, description="maxmemory of the one corral starts (it evicts LRU keys past it)"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^rediss?://[^/\s]+(/\d+)?$", value):
            raise ValueError("must be redis://host:port/db (or rediss:// for TLS)")
        return value


class WorkerConfig(_Frozen):
    host: str = "127.0.0.1"
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0


class SupervisorConfig(_Frozen):
    run_dir: str = ".corral"
    startup_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    restart_backoff_s: Annotated[float, Field(gt=0)] = 0.5
    restart_backoff_max_s: Annotated[float, Field(gt=0)] = 30.0
    stop_timeout_s: Annotated[float, Field(gt=0)] = 40.0


class ObservabilityConfig(_Frozen):
    """Prometheus started by `corral up` (the same files are written for your own)."""

    prometheus: bool = False
    prometheus_port: Annotated[int, Field(ge=0, le=65535)] = 9090
    scrape_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0


class PrefixConfig(_Frozen):
    """How prefixes are identified; shared by the router and every worker so hashes agree."""

    block_size: Annotated[int, Field(ge=1, le=4096)] = 16


class StackConfig(_Frozen):
    """A whole stack: the router, the worker defaults, the supervisor and the models."""

    router: RouterConfig = RouterConfig()
    worker: WorkerConfig = WorkerConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    prefix: PrefixConfig = PrefixConfig()
    cache: CacheConfig = CacheConfig()
    redis: RedisConfig = RedisConfig()
    models: tuple[ModelConfig, ...]

    @model_validator(mode="after")
    def _check_unique_names(self) -> StackConfig:
        if not self.models:
            raise ValueError("models: the stack serves no model; list at least one")
        seen: dict[str, str] = {}
        for model in self.models:
            for served in model.served_names:
                if served in seen:
                    raise ValueError(
                        f"name '{served}' of model '{model.name}' is already used by model '{seen[served]}'"
                    )
                seen[served] = model.name
        return self

    @model_validator(mode="after")
    def _check_roles(self) -> StackConfig:
        for model in self.models:
            if (model.prefill_replicas or model.prefill_endpoints) and self.cache.redis is None:
                raise ValueError(
                    f"models ({model.name}): prefill workers hand the KV to decode workers through "
                    "the shared tier; set cache.redis"
                )
        return self

    @property
    def needs_redis(self) -> bool:
        """Whether some part of the stack uses the stack's Redis."""
        return self.cache.redis is not None or self.router.shared_limits

    @model_validator(mode="after")
    def _check_key_models(self) -> StackConfig:
        served = {name for model in self.models for name in model.served_names}
        unknown_limited = [name for name in self.router.model_limits if name not in served]
        if unknown_limited:
            raise ValueError(f"router.model_limits: unknown model(s) {', '.join(unknown_limited)}")
        for key in self.router.auth.keys:
            unknown = [name for name in key.models if name not in served]
            if unknown:
                raise ValueError(f"router.auth.keys ({key.name}).models: unknown model(s) {', '.join(unknown)}")
        return self

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if name in model.served_names:
                return model
        raise ConfigError(f"models: no model named '{name}' (have: {', '.join(m.name for m in self.models)})")


def dial_host(bind_host: str) -> str:
    """The address to call a server on, given the address it binds (0.0.0.0 -> loopback)."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "::") else bind_host


def _field_path(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``models.1.replicas`` -> ``models[1] (gemma3-270m).replicas``: name the model too."""
    parts: list[str] = []
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            label = f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                label += f" ({node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + part)
            node = node.get(part) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _format_validation_error(error: ValidationError, origin: str, data: dict[str, Any]) -> str:
    lines = [f"{origin}: invalid stack file"]
    for item in error.errors():
        path = _field_path(item["loc"], data)
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {path}: {message}{shown}")
    return "\n".join(lines)


def parse_stack(data: Any, *, origin: str = "stack") -> StackConfig:
    """Validate an already-parsed document; errors name each bad field and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a stack file must be a mapping with a 'models' list")
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin, data)) from None


def load_stack(path: str | Path | None = None) -> StackConfig:
    """Read and validate a stack file; ``None`` gives the built-in default stack."""
    if path is None:
        text = default_stack_text()
        origin = "built-in default stack"
    else:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read stack file: {exc.strerror}") from None
        origin = str(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    return with_env_keys(parse_stack(data, origin=origin), os.environ.get(API_KEYS_ENV))


def with_env_keys(stack: StackConfig, value: str | None) -> StackConfig:
    """Add the keys of ``CORRAL_API_KEYS`` (``name:key,...``), hashed, to the router's auth."""
    if not value:
        return stack
    keys = list(stack.router.auth.keys)
    known = {key.sha256 for key in keys}
    for item in value.split(","):
        name, sep, key = item.strip().partition(":")
        if not sep or not name or not key:
            raise ConfigError(f"{API_KEYS_ENV}: entries must be name:key, comma-separated (got an entry without both)")
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in known:  # e.g. the supervisor's resolved stack already carries it
            continue
        try:
            keys.append(ApiKeyConfig(name=name, sha256=digest))
        except ValidationError:
            raise ConfigError(f"{API_KEYS_ENV}: key name '{name}' must be 1-64 letters, digits, . _ -") from None
    auth = stack.router.auth.model_copy(update={"keys": tuple(keys)})
    return stack.model_copy(update={"router": stack.router.model_copy(update={"auth": auth})})


def default_stack_text() -> str:
    """The default stack that `corral up` runs with no file (also examples/stack.yaml)."""
    return resources.files("corral").joinpath("default_stack.yaml").read_text(encoding="utf-8")


def dump_stack(config: StackConfig) -> str:
    """Serialize a stack (e.g. the supervisor's resolved stack with endpoints) as YAML."""
    return str(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
