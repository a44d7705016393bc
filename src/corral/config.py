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


SpeculativeMethod = Literal["ngram", "draft", "eagle", "eagle3"]


class SpeculativeConfig(_Frozen):
    """Speculative decoding for a vLLM model (vLLM's --speculative-config).

    ``ngram``: proposals looked up in the prompt itself (``prompt_lookup_min`` ..
    ``prompt_lookup_max`` tokens), no extra model. ``draft``: a small model of the same
    vocabulary proposes (``model``). ``eagle`` / ``eagle3``: an EAGLE head trained for the
    target model proposes (``model``)."""

    method: SpeculativeMethod
    num_speculative_tokens: Annotated[int, Field(ge=1, le=64)] = Field(
        description="tokens proposed per step"
    )
    model: str | None = Field(
        default=None, description="draft model or EAGLE head (hub id or path); for draft, eagle and eagle3"
    )
    prompt_lookup_max: Annotated[int | None, Field(ge=1, le=1024)] = Field(
        default=None, description="longest n-gram looked up in the prompt (ngram); None: vLLM's default"
    )
    prompt_lookup_min: Annotated[int | None, Field(ge=1, le=1024)] = Field(
        default=None, description="shortest n-gram looked up in the prompt (ngram); None: vLLM's default"
    )

    @model_validator(mode="after")
    def _check_method(self) -> SpeculativeConfig:
        if self.method == "ngram":
            if self.model is not None:
                raise ValueError("model: method 'ngram' proposes from the prompt and takes no model")
            low, high = self.prompt_lookup_min, self.prompt_lookup_max
            if low is not None and high is not None and low > high:
                raise ValueError(f"prompt_lookup_min ({low}) must not exceed prompt_lookup_max ({high})")
        else:
            if self.model is None:
                raise ValueError(f"model: method '{self.method}' needs the draft model or EAGLE head to load")
            if self.prompt_lookup_max is not None or self.prompt_lookup_min is not None:
                raise ValueError("prompt_lookup_min/max: apply to method 'ngram' only")
        return self


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
    speculative: SpeculativeConfig | None = Field(default=None, description="speculative decoding; absent: none")
    kv_events_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=5557, description="port of vLLM's ZMQ KV event publisher (the router's kv policy subscribes)"
    )
    kv_events_replay_port: Annotated[int | None, Field(ge=1, le=65535)] = Field(
        default=5558, description="port of its replay socket (missed batches are asked for again); None: no replay"
    )
    lmcache: bool | None = Field(
        default=None,
        description="LMCache for the cache section's tiers; None: on when cache.disk or cache.redis is set "
        "or the model has prefill workers",
    )

    @model_validator(mode="after")
    def _check_ports(self) -> VllmConfig:
        if self.kv_events_replay_port is not None and self.kv_events_replay_port == self.kv_events_port:
            raise ValueError(f"kv_events_replay_port ({self.kv_events_replay_port}) must differ from kv_events_port")
        return self

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
        default=None,
        description="tokenizer.json for an onnx-embed file source (packaged ones know theirs); for a vllm "
        "model routed by `kv`, a GGUF file with its vocabulary and chat template (the router tokenizes)",
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
    """How much each scorer of the ``session`` policy counts (scores are 0..1; the highest
    sum wins), and what a prefix block held in a lower KV tier is worth (``prefix``, ``kv``).

    ``load``: fewest in-flight requests; ``session``: the endpoint the session used last.
    """

    load: Annotated[float, Field(ge=0)] = 1.0
    session: Annotated[float, Field(ge=0)] = 3.0
    disk_hit: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.7, description="what a prefix block on the endpoint's disk tier is worth vs one in its RAM (kv)"
    )
    redis_hit: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5, description="what a block in the shared Redis tier is worth to any endpoint vs one in RAM (kv)"
    )

    def medium_weights(self) -> dict[str, float]:
        """KV event medium -> weight, for the prefix index."""
        return {"disk": self.disk_hit, "redis": self.redis_hit}


class RoutingConfig(_Frozen):
    """How the router picks an endpoint: a policy per model, and what the policies share.

    Policies: ``round_robin``, ``least_loaded``, ``session`` (sticky by ``session_header``
    or the request's ``user``), ``prefix`` (approximate: learns which endpoint saw which
    prompt text), ``kv`` (exact: tokenizes like the worker and follows its KV events);
    ``prefix`` and ``kv`` send a request where the least work stands before its first
    token (see ``in_flight_tokens``).
    """

    policy: RoutingPolicyName = "least_loaded"
    models: dict[str, RoutingPolicyName] = Field(
        default_factory=dict, description="per-model policy, overriding `policy` (model name -> policy)"
    )
    weights: RoutingWeights = RoutingWeights()
    in_flight_tokens: Annotated[float, Field(ge=0)] = Field(
        default=256.0,
        description=(
            "prefix and kv: what each request already running on an endpoint adds to a new "
            "request's wait there, in prompt tokens to prefill (they pick the least work: "
            "uncached prompt tokens + queued prefill + this x running requests)"
        ),
    )
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


class RedisLimitsConfig(_Frozen):
    """How rate limits counted in the stack's Redis (``router.shared_limits``) behave."""

    on_error: Literal["local", "open", "closed"] = Field(
        default="local",
        description="while Redis cannot be reached: local (each router counts on its own: fail-open, "
        "bounded), open (no limit), closed (refuse with 503)",
    )
    timeout_s: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.25, description="longest wait for Redis per check; slower counts as unreachable"
    )
    retry_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="after a failure, how long the router leaves Redis alone before trying again"
    )
    lease_ttl_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="a concurrency slot of a router that died frees itself after this long (live ones renew)",
    )


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



_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE_RE = re.compile(rf"^({_LABEL_NAME})?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _label_map(value: dict[str, str]) -> dict[str, str]:
    """Kubernetes labels: valid keys and values, or a ValueError naming the first bad one."""
    for key, label in value.items():
        if not _LABEL_KEY_RE.match(key):
            raise ValueError(f"'{key}' is not a Kubernetes label key")
        if not _LABEL_VALUE_RE.match(label):
            raise ValueError(f"label '{key}': '{label}' is not a Kubernetes label value")
    return value


def _dns_label(value: str | None, what: str) -> str | None:
    if value is not None and not _DNS_LABEL_RE.match(value):
        raise ValueError(f"must be a Kubernetes {what}: lower-case letters, digits and -, at most 63")
    return value


def _http_url(value: str) -> str:
    if not _URL_RE.match(value):
        raise ValueError(f"'{value}' is not an http(s) URL")
    return value


class KubernetesDiscoveryConfig(_Frozen):
    """The router finds its workers by watching pods through the Kubernetes API.

    It watches pods labelled ``app.kubernetes.io/name=corral-worker`` that carry a
    ``corral.dev/model`` label (plus ``selector``) in one namespace; a pod's model is its
    ``corral.dev/model-name`` annotation, its pool its ``corral.dev/role`` label. Where the
    API is: ``api_url`` (e.g. ``kubectl proxy``, or a test server), else ``kubeconfig``,
    else the pod's own service account (in-cluster)."""

    kind: Literal["kubernetes"] = Field(default="kubernetes", description="the only kind besides static (absent)")
    namespace: str | None = Field(
        default=None, description="namespace of the worker pods; absent: the router pod's own (or the kubeconfig context's)"
    )
    selector: dict[str, str] = Field(
        default_factory=dict, description="extra labels the worker pods must carry (e.g. app.kubernetes.io/instance)"
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8000, description="worker port when the pod names no container port 'http'"
    )
    api_url: str | None = Field(default=None, description="the API server's base URL; absent: kubeconfig or in-cluster")
    kubeconfig: str | None = Field(default=None, description="kubeconfig file for a router outside the cluster")
    context: str | None = Field(default=None, description="kubeconfig context; absent: its current-context")
    token_file: str | None = Field(default=None, description="bearer token file for api_url")
    ca_file: str | None = Field(default=None, description="CA bundle for an https api_url")
    service_account_dir: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount",
        description="in-cluster: token, ca.crt and namespace of the router's service account",
    )
    watch_timeout_s: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=300, description="the API server ends each watch after this long; the router resumes it"
    )
    retry_s: Annotated[float, Field(gt=0, le=60)] = Field(default=0.5, description="first wait after an API error")
    retry_max_s: Annotated[float, Field(gt=0, le=600)] = Field(default=10.0, description="longest wait between retries")
    sync_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="how long router startup waits for the first pod list"
    )

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str | None) -> str | None:
        return _dns_label(value, "namespace name")

    @field_validator("selector")
    @classmethod
    def _check_selector(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_map(value)

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value).rstrip("/")

    @model_validator(mode="after")
    def _check_source(self) -> KubernetesDiscoveryConfig:
        if self.api_url is not None and self.kubeconfig is not None:
            raise ValueError("give api_url or kubeconfig, not both")
        if self.retry_max_s < self.retry_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s}) is below retry_s ({self.retry_s})")
        return self


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
    prefill_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=120.0, description="longest wait for a prefill worker; then the decode worker prefills itself"
    )
    prefill_min_tokens: Annotated[int, Field(ge=1)] = Field(
        default=256, description="shorter prompts skip the prefill workers: the decode worker prefills them itself"
    )
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
    redis_limits: RedisLimitsConfig = Field(
        default=RedisLimitsConfig(), description="timeouts, leases and the outage behaviour of shared_limits"
    )
    model_limits: dict[str, LimitsConfig] = Field(
        default_factory=dict, description="model name -> limits shared by all its callers"
    )
    discovery: KubernetesDiscoveryConfig | None = Field(
        default=None,
        description="where workers are: absent, the models' endpoints (static); kind: kubernetes, watch worker pods",
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


_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|m)?$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
_AWS_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")


class DeployConfig(_Frozen):
    """How `corral deploy render` lays the stack out on Kubernetes (EKS or on-prem).

    Unused by `corral up`. Per-model GPU needs stay in each model's ``gpu`` and ``vllm``
    sections (written by `corral plan --emit`); this section holds what is per cluster."""

    namespace: str = Field(default="corral", description="namespace of every rendered object")
    kubernetes_version: str = Field(
        default="1.33", pattern=r"^1\.[0-9]{2}$",
        description="the cluster's Kubernetes minor version: eksctl's cluster version, and the schemas "
        "the rendered manifests are validated against",
    )
    image: str = Field(default="corral:0.1.0", description="the corral image the router runs (built from this repository)")
    vllm_image: str = Field(
        default="vllm/vllm-openai:v0.11.0",
        description="the vLLM image the workers run; with cache tiers it must have LMCache installed "
        "(e.g. lmcache/vllm-openai)",
    )
    redis_image: str = Field(default="redis:7.4-alpine", description="image of the Redis corral deploys (no redis.url)")
    router_replicas: Annotated[int, Field(ge=2, le=100)] = Field(
        default=2, description="router replicas at least (two or more: the router must survive a node)"
    )
    router_max_replicas: Annotated[int, Field(ge=2, le=100)] = Field(
        default=4, description="router replicas at most (a HorizontalPodAutoscaler on CPU between the two)"
    )
    router_cpu_utilization: Annotated[int, Field(ge=10, le=100)] = Field(
        default=70, description="CPU use (% of the request) the router autoscaler aims at"
    )
    router_cpu: str = Field(default="1", description="CPU request of a router pod (Kubernetes quantity)")
    router_memory: str = Field(default="1Gi", description="memory request and limit of a router pod")
    ingress_class: str | None = Field(
        default=None, description="IngressClass of an Ingress in front of the router (alb, nginx, ...); "
        "absent, and no ingress_host: no Ingress"
    )
    ingress_host: str | None = Field(default=None, description="host name the Ingress serves; absent: any")
    ingress_tls_secret: str | None = Field(default=None, description="TLS Secret for ingress_host; absent: plain HTTP")
    ingress_annotations: dict[str, str] = Field(
        default_factory=dict, description="annotations for the Ingress controller (e.g. streaming timeouts)"
    )
    storage_class: str | None = Field(
        default=None, description="StorageClass of the model cache volumes; absent: the cluster's default"
    )
    model_cache: Literal["per-pod", "shared"] = Field(
        default="per-pod",
        description="per-pod: each worker pod gets its own volume (ReadWriteOnce, e.g. EBS) and downloads the "
        "weights; shared: one ReadWriteMany volume per model (e.g. EFS, NFS) that every replica reuses",
    )
    model_cache_size: str = Field(default="200Gi", description="size of a model cache volume")
    shm_size: str = Field(default="16Gi", description="size of the shared-memory volume at /dev/shm of a vLLM pod")
    gpu_node_label: str | None = Field(
        default="corral.dev/gpu",
        description="on-prem: node label whose value names the GPU (the model's gpu.type, or gpu_label_values); "
        "absent: select GPU nodes by gpu_node_selector only",
    )
    gpu_label_values: dict[str, str] = Field(
        default_factory=dict,
        description="gpu.type -> value of gpu_node_label, e.g. h100: NVIDIA-H100-80GB-HBM3 with "
        "gpu_node_label nvidia.com/gpu.product (GPU feature discovery)",
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="more node labels every GPU pod requires (both targets)"
    )
    gpu_taint_key: str = Field(
        default="nvidia.com/gpu", description="taint of the GPU nodes that vLLM pods tolerate (NoSchedule)"
    )
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = Field(
        default=8, description="on-prem: GPUs in one node; a replica needing more spans nodes (LeaderWorkerSet)"
    )
    worker_startup_timeout_s: Annotated[int, Field(ge=60, le=86_400)] = Field(
        default=1800, description="how long a vLLM pod may take to download and load its model before it is restarted"
    )
    prestop_sleep_s: Annotated[int, Field(ge=0, le=300)] = Field(
        default=10, description="a pod keeps serving this long after it is told to stop, so routers and "
        "Services stop sending it requests before it drains"
    )
    autoscaling: bool = Field(
        default=True, description="scale vLLM replicas on their queue (KEDA ScaledObject; needs KEDA)"
    )
    worker_max_replicas: Annotated[int, Field(ge=1, le=64)] = Field(
        default=4, description="replicas per model (and role) at most; the model's replicas are the least"
    )
    queue_target: Annotated[float, Field(gt=0)] = Field(
        default=5.0, description="requests waiting per vLLM replica (vllm:num_requests_waiting) to scale at"
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="Prometheus that KEDA asks for the queue metrics",
    )
    monitoring: bool = Field(
        default=True, description="render ServiceMonitors, a PrometheusRule and Grafana dashboards "
        "(needs the Prometheus operator)"
    )
    monitoring_labels: dict[str, str] = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description="labels your Prometheus selects ServiceMonitors and rules by",
    )
    monitoring_namespace: str = Field(
        default="monitoring", description="namespace of Prometheus (allowed to scrape the workers)"
    )
    hf_token_secret: str = Field(
        default="hf-token", description="Secret with key 'token': the Hugging Face token for gated models (optional)"
    )
    api_keys_secret: str = Field(
        default="corral-api-keys",
        description="Secret with key 'keys' for the router's CORRAL_API_KEYS (name:key,...; optional)",
    )
    worker_api_key_secret: str | None = Field(
        default=None,
        description="Secret with key 'api-key' that vLLM requires (VLLM_API_KEY); absent: workers accept "
        "requests from the router's pods only (NetworkPolicy)",
    )
    eks_cluster_name: str = Field(default="corral", description="EKS: the cluster eksctl creates")
    eks_region: str = Field(default="us-east-1", description="EKS: AWS region")
    eks_gpu_zone: str | None = Field(
        default=None, description="EKS: availability zone of the GPU node groups (where capacity is); "
        "absent: eksctl chooses"
    )
    eks_system_instance_type: str = Field(
        default="m6i.xlarge", description="EKS: instance type of the node group for the router, Redis and operators"
    )
    eks_system_nodes: Annotated[int, Field(ge=1, le=100)] = Field(
        default=2, description="EKS: nodes in the system node group (2 or more spread the routers)"
    )
    eks_gpu_volume_gib: Annotated[int, Field(ge=20, le=16_384)] = Field(
        default=500, description="EKS: root volume of a GPU node, GiB (images and caches)"
    )

    @field_validator("namespace", "monitoring_namespace", "hf_token_secret", "api_keys_secret",
                     "worker_api_key_secret", "eks_cluster_name", "ingress_tls_secret")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return _dns_label(value, "name")

    @field_validator("image", "vllm_image", "redis_image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        if not _IMAGE_RE.match(value):
            raise ValueError("must be a container image reference such as vllm/vllm-openai:v0.11.0")
        return value

    @field_validator("router_cpu", "router_memory", "model_cache_size", "shm_size")
    @classmethod
    def _check_quantity(cls, value: str) -> str:
        if not _QUANTITY_RE.match(value):
            raise ValueError("must be a Kubernetes quantity such as 500m, 2, 16Gi")
        return value

    @field_validator("gpu_node_label", "gpu_taint_key")
    @classmethod
    def _check_label_key(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL_KEY_RE.match(value):
            raise ValueError(f"'{value}' is not a Kubernetes label key")
        return value

    @field_validator("gpu_label_values", "gpu_node_selector", "monitoring_labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_map(value)

    @field_validator("prometheus_url")
    @classmethod
    def _check_prometheus_url(cls, value: str) -> str:
        return _http_url(value).rstrip("/")

    @field_validator("eks_region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not _AWS_REGION_RE.match(value):
            raise ValueError("must be an AWS region such as us-east-1")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> DeployConfig:
        if self.router_max_replicas < self.router_replicas:
            raise ValueError(
                f"router_max_replicas ({self.router_max_replicas}) is below router_replicas ({self.router_replicas})"
            )
        return self


class StackConfig(_Frozen):
    """A whole stack: the router, the worker defaults, the supervisor and the models."""

    router: RouterConfig = RouterConfig()
    worker: WorkerConfig = WorkerConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    prefix: PrefixConfig = PrefixConfig()
    cache: CacheConfig = CacheConfig()
    redis: RedisConfig = RedisConfig()
    deploy: DeployConfig = Field(
        default=DeployConfig(), description="how `corral deploy render` lays the stack out on Kubernetes"
    )
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
