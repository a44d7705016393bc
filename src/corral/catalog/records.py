"""The typed records the catalogs are made of. Plain frozen dataclasses: data, no behaviour
beyond a few derived properties.

Every record carries its :class:`Source` list. A source's ``mark`` says how far it was
checked, with the legend of docs/plan.md (from planning.md): ``verified`` (read in the
cited source), ``secondary`` (from a copy of it), ``unverified`` (not checked; an
estimate or a value from memory). The planner shows unverified entries as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mark = Literal["verified", "secondary", "unverified"]
AttentionKind = Literal["full", "sliding", "mla"]
ModelTask = Literal["chat", "completion", "embedding", "rerank"]
Interconnect = Literal["nvlink", "pcie"]
Provider = Literal["aws", "on-prem"]
ComputeDtype = Literal["bf16", "fp8"]

MARK_SYMBOL: dict[str, str] = {"verified": "✅", "secondary": "◐", "unverified": "❌"}

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Source:
    """Where a value comes from: a URL or ``owner/repo path``; ``covers`` names the fields
    it backs when it is not the whole entry."""

    ref: str
    mark: Mark = "verified"
    covers: str = ""

    def __str__(self) -> str:
        scope = f" ({self.covers})" if self.covers else ""
        return f"{MARK_SYMBOL[self.mark]} {self.ref}{scope}"


def weakest_mark(sources: tuple[Source, ...]) -> Mark:
    """An entry is only as checked as its least checked source."""
    marks = {source.mark for source in sources}
    if "unverified" in marks:
        return "unverified"
    if "secondary" in marks:
        return "secondary"
    return "verified"


@dataclass(frozen=True)
class LayerGroup:
    """Decoder layers that share one KV layout (in vLLM: one ``KVCacheSpec``).

    ``full``: every token's K and V (``kv_heads`` * ``head_dim`` each) for the whole context.
    ``sliding``: the same per token, but only the last ``window`` tokens are attended.
    ``mla``: one compressed latent per token (``head_dim`` = kv_lora_rank + qk_rope_head_dim,
    ``kv_heads`` = 1), stored once rather than as separate K and V.
    """

    layers: int
    kind: AttentionKind
    kv_heads: int
    head_dim: int
    window: int | None = None

    def __post_init__(self) -> None:
        if (self.kind == "sliding") != (self.window is not None):
            raise ValueError("a sliding group needs a window; other groups have none")
        if self.kind == "mla" and self.kv_heads != 1:
            raise ValueError("an MLA group stores one latent per token: kv_heads is 1")


@dataclass(frozen=True)
class ModelArch:
    """What the planner needs to know of a model: sizes, attention layout, context, dtype."""

    name: str
    hf_repo: str
    task: ModelTask
    params: float
    active_params: float
    hidden_size: int
    heads: int
    attention: tuple[LayerGroup, ...]
    max_context: int
    native_dtype: str
    sources: tuple[Source, ...]
    aliases: tuple[str, ...] = ()
    encoder_layers: int = 0
    experts: int | None = None
    experts_per_token: int | None = None
    native_weight_bytes: int | None = None
    notes: str = ""

    @property
    def layers(self) -> int:
        return self.encoder_layers or sum(group.layers for group in self.attention)

    @property
    def is_encoder(self) -> bool:
        return not self.attention

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    @property
    def attention_label(self) -> str:
        """full / GQA / MQA / MLA, plus the sliding-window pattern when there is one."""
        if self.is_encoder:
            return "encoder (no KV cache)"
        kinds = {group.kind for group in self.attention}
        if "mla" in kinds:
            return "MLA"
        kv_heads = self.attention[0].kv_heads
        base = "MHA" if kv_heads == self.heads else ("MQA" if kv_heads == 1 else "GQA")
        sliding = [group for group in self.attention if group.kind == "sliding"]
        if not sliding:
            return base
        full = sum(group.layers for group in self.attention if group.kind == "full")
        return f"{base}, {sliding[0].layers} sliding (window {sliding[0].window}) + {full} full"

    @property
    def mark(self) -> Mark:
        return weakest_mark(self.sources)


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator. Throughputs are dense peak figures (no 2:4 sparsity)."""

    name: str
    label: str
    memory_bytes: int
    memory_bandwidth_bytes_s: float
    bf16_flops: float
    fp8_flops: float | None
    interconnect: Interconnect
    link_bytes_s: float
    sources: tuple[Source, ...]

    @property
    def mark(self) -> Mark:
        return weakest_mark(self.sources)

    def flops(self, compute: ComputeDtype) -> float:
        """Peak dense FLOP/s for the quantization's compute dtype (bf16 where no fp8 cores)."""
        if compute == "fp8" and self.fp8_flops is not None:
            return self.fp8_flops
        return self.bf16_flops


@dataclass(frozen=True)
class Instance:
    """Something GPUs come in: a cloud instance type, or a box of your own."""

    name: str
    provider: Provider
    gpu: str
    gpu_count: int
    vcpus: int | None
    ram_gib: int | None
    usd_per_hour: float | None
    sources: tuple[Source, ...]
    notes: str = ""

    @property
    def mark(self) -> Mark:
        return weakest_mark(self.sources)


@dataclass(frozen=True)
class QuantFormat:
    """A weight format: its size per parameter (scales included) and how vLLM runs it."""

    name: str
    bits_per_weight: float
    compute: ComputeDtype
    vllm_quantization: str | None
    engines: tuple[str, ...]
    sources: tuple[Source, ...]
    prequantized: bool = False
    notes: str = ""

    @property
    def bytes_per_param(self) -> float:
        return self.bits_per_weight / 8

    @property
    def mark(self) -> Mark:
        return weakest_mark(self.sources)
