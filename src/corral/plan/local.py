"""What fits this machine on CPU: the models corral ships (GGUF for llama.cpp, ONNX for
embeddings), the RAM they need per replica, and how many replicas its RAM and cores carry.

Decode speeds are the measurements of shared/reference/cpu-engines.md (2 threads, one
machine of this kind); a larger GGUF model's speed is extrapolated from SmolLM2's
(bytes read per token / measured tokens per second), so treat it as an order of magnitude.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from corral.catalog.models import MODELS, find_model
from corral.catalog.quant import find_quant
from corral.catalog.records import ModelArch
from corral.plan.memory import kv_bytes_per_sequence, model_weight_bytes

#: Python, the engine library and buffers of one worker process (assumption, not measured).
WORKER_RUNTIME_BYTES = 200 * 1024**2
#: Leave this share of available RAM to the router, the OS and page cache.
RAM_SHARE = 0.8
#: llama.cpp's default micro-batch; it bounds sliding-window KV like vLLM's batched tokens.
LLAMACPP_UBATCH = 512
#: SmolLM2-135M Q4_1 (98 MB) decodes ~50 tokens/s on 2 threads: ~4.9 GB/s of weights read.
CPU_DECODE_BYTES_PER_S_2_THREADS = 98e6 * 50


@dataclass(frozen=True)
class Machine:
    ram_total_bytes: int
    ram_available_bytes: int
    cpus: int


@dataclass(frozen=True)
class ShippedModel:
    name: str
    arch: str
    engine: str
    file_bytes: int
    measured: str


SHIPPED: tuple[ShippedModel, ...] = (
    ShippedModel("smollm2-135m-instruct", "smollm2-135m-instruct", "llamacpp", 98_000_000,
                 "decode 44-65 tok/s, prefill 133-150 tok/s (Q4_1, 2 threads)"),
    ShippedModel("gemma3-270m", "gemma-3-270m", "llamacpp", 253_000_000,
                 "decode 25-35 tok/s, prefill 180-260 tok/s (Q4_K_M, 2 threads)"),
    ShippedModel("minilm-l6-v2", "minilm-l6-v2", "onnx-embed", 22_900_000,
                 "250-390 sentences/s (int8 ONNX, 2 threads)"),
)


def read_machine(meminfo: str, cpus: int) -> Machine:
    """RAM from /proc/meminfo's MemTotal and MemAvailable (kB), cores from os.cpu_count()."""
    fields: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * 1024
    if "MemTotal" not in fields:
        raise ValueError("no MemTotal line in /proc/meminfo")
    return Machine(fields["MemTotal"], fields.get("MemAvailable", fields["MemTotal"]), max(1, cpus))


def this_machine(meminfo_path: Path = Path("/proc/meminfo")) -> Machine:
    return read_machine(meminfo_path.read_text(encoding="utf-8"), os.cpu_count() or 1)


@dataclass(frozen=True)
class LocalFit:
    name: str
    engine: str
    weights_bytes: int
    kv_bytes: int
    replica_bytes: int
    threads: int
    replicas_by_ram: int
    replicas_by_cores: int
    measured: str

    @property
    def replicas(self) -> int:
        return min(self.replicas_by_ram, self.replicas_by_cores)


def _kv_bytes(arch: ModelArch, context_tokens: int) -> int:
    """llama.cpp keeps an f16 KV cache; sliding layers hold about window + micro-batch tokens."""
    tokens = min(context_tokens, arch.max_context)
    return kv_bytes_per_sequence(arch, tokens, kv_dtype="fp16", max_num_batched_tokens=LLAMACPP_UBATCH, block_size=1)


def fit(shipped: ShippedModel, machine: Machine, context_tokens: int, threads: int = 1) -> LocalFit:
    """RAM per replica = weights file + KV at the context + worker runtime; replicas = the
    fewer of ⌊80 % of available RAM ÷ that⌋ and ⌊cores ÷ threads⌋."""
    arch = find_model(shipped.arch)
    assert arch is not None, shipped.arch
    kv = _kv_bytes(arch, context_tokens)
    replica = shipped.file_bytes + kv + WORKER_RUNTIME_BYTES
    return LocalFit(shipped.name, shipped.engine, shipped.file_bytes, kv, replica, threads,
                    int(machine.ram_available_bytes * RAM_SHARE // replica), max(1, machine.cpus // threads),
                    shipped.measured)


@dataclass(frozen=True)
class LargerFit:
    name: str
    weights_bytes: int
    kv_bytes: int
    fits: bool
    decode_tokens_per_s: float


def larger_models(machine: Machine, context_tokens: int) -> list[LargerFit]:
    """Catalog chat models as Q4_K_M GGUF: do weights + KV fit the RAM, and roughly how fast
    would one sequence decode on 2 threads (tokens/s ≈ SmolLM2's measured bytes/s ÷ bytes
    of weights read per token)."""
    q4 = find_quant("q4_k_m")
    assert q4 is not None
    shipped = {item.arch for item in SHIPPED}
    fits: list[LargerFit] = []
    for arch in MODELS:
        if arch.is_encoder or arch.name in shipped or arch.params > 200e9:
            continue
        weights = model_weight_bytes(arch, q4)
        kv = _kv_bytes(arch, context_tokens)
        read = weights * arch.active_params / arch.params
        fits.append(LargerFit(arch.name, weights, kv,
                              weights + kv + WORKER_RUNTIME_BYTES <= machine.ram_available_bytes * RAM_SHARE,
                              CPU_DECODE_BYTES_PER_S_2_THREADS / read))
    return sorted(fits, key=lambda item: item.weights_bytes)
