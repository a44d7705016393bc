"""GPU memory: weights, KV cache bytes as vLLM allocates them, vLLM's memory budget, the
sequences that fit, and the tensor-parallel degree a model needs.

Each function states its formula and where it comes from. KV sizes follow vLLM's
``vllm/v1/kv_cache_interface.py``: ``AttentionSpec.page_size_bytes`` (K and V per KV head),
``MLAAttentionSpec`` (one latent, no factor 2; ``fp8_ds_mla`` is a fixed 656 B per token
and layer), ``FullAttentionSpec.max_memory_usage_bytes`` and
``SlidingWindowSpec.max_memory_usage_bytes`` (window - 1 + max_num_batched_tokens, + 1 block).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from corral.catalog.quant import KV_DTYPE_BYTES
from corral.catalog.records import GIB, GpuSpec, LayerGroup, ModelArch, QuantFormat

#: vLLM's KV block (page) size in tokens (``CacheConfig.DEFAULT_BLOCK_SIZE``).
BLOCK_SIZE = 16
#: ``fp8_ds_mla``: 512 fp8 latent + 4 fp32 scales + 64 bf16 rope dims (``MLAAttentionSpec``).
FP8_DS_MLA_BYTES_PER_TOKEN_LAYER = 656
#: Peak activation of vLLM's profile run, per batched token and unit of hidden size (bytes).
#: A heuristic (≈ 24 bf16 hidden-sized tensors live at once), not a measurement:
#: calibrate it against vLLM's "Memory profiling" log line ("activation peak").
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 48


def weight_bytes(params: float, bytes_per_param: float) -> int:
    """Weights = parameters * bytes per parameter (scales included in the latter)."""
    return math.ceil(params * bytes_per_param)


def model_weight_bytes(model: ModelArch, quant: QuantFormat) -> int:
    """The model's weights in ``quant``; in its native format a mixed-precision checkpoint
    (gpt-oss: MXFP4 experts, bf16 attention) is counted at its real size."""
    if quant.name == model.native_dtype and model.native_weight_bytes is not None:
        return model.native_weight_bytes
    return weight_bytes(model.params, quant.bytes_per_param)


def kv_heads_per_rank(kv_heads: int, tp: int) -> int:
    """KV heads held by one TP rank: split across ranks, replicated when fewer than TP
    (vLLM: ``max(1, total_num_kv_heads // tensor_parallel_size)``)."""
    return max(1, kv_heads // tp)


def kv_layer_bytes_per_token(group: LayerGroup, kv_dtype: str, tp: int = 1) -> int:
    """One token in one layer on one GPU.

    GQA/MHA/MQA: ``2 (K and V) * kv_heads_per_rank * head_dim * bytes``.
    MLA: ``(kv_lora_rank + qk_rope_head_dim) * bytes``, one latent and no factor 2; every
    TP rank keeps the whole latent (there is no head to split), so TP does not shrink it.
    """
    if group.kind == "mla":
        if kv_dtype == "fp8_ds_mla":
            return FP8_DS_MLA_BYTES_PER_TOKEN_LAYER
        return math.ceil(group.head_dim * KV_DTYPE_BYTES[kv_dtype])
    return math.ceil(2 * kv_heads_per_rank(group.kv_heads, tp) * group.head_dim * KV_DTYPE_BYTES[kv_dtype])


def kv_bytes_per_token(model: ModelArch, kv_dtype: str = "auto", tp: int = 1) -> int:
    """KV of one token across all layers on one GPU, as if every layer kept every token:
    ``Σ layers * per-layer bytes``. Llama 3.1 8B in bf16: 32 * 2 * 8 * 128 * 2 = 131,072
    (128 KiB); DeepSeek-V3 MLA: 61 * 576 * 2 = 70,272."""
    return sum(group.layers * kv_layer_bytes_per_token(group, kv_dtype, tp) for group in model.attention)


def kv_tokens_held(group: LayerGroup, context_tokens: int, max_num_batched_tokens: int,
                   block_size: int = BLOCK_SIZE) -> int:
    """Tokens' worth of KV pages one sequence of ``context_tokens`` holds in a layer.

    Full attention and MLA: every token, rounded up to whole blocks.
    Sliding window: ``min(window - 1 + max_num_batched_tokens, context)`` tokens, rounded
    up to blocks, plus one block because the window need not start on a block boundary.
    """
    blocks = -(-context_tokens // block_size)
    if group.kind == "sliding":
        assert group.window is not None
        held = min(group.window - 1 + max_num_batched_tokens, context_tokens)
        blocks = -(-held // block_size) + 1
    return blocks * block_size


def kv_bytes_per_sequence(model: ModelArch, context_tokens: int, *, kv_dtype: str = "auto", tp: int = 1,
                          max_num_batched_tokens: int = 2048, block_size: int = BLOCK_SIZE) -> int:
    """KV one sequence of ``context_tokens`` needs on one GPU: Σ over layer groups of
    ``layers * bytes per token and layer * tokens held`` (vLLM's ``max_memory_usage_bytes``)."""
    return sum(
        group.layers * kv_layer_bytes_per_token(group, kv_dtype, tp)
        * kv_tokens_held(group, context_tokens, max_num_batched_tokens, block_size)
        for group in model.attention
    )


class BatchDefaults(NamedTuple):
    max_num_batched_tokens: int
    max_num_seqs: int


def vllm_batch_defaults(gpu: GpuSpec) -> BatchDefaults:
    """vLLM's API-server defaults (``EngineArgs.get_batch_defaults``): 8192 batched tokens and
    1024 sequences on GPUs with ≥ 70 GiB that are not A100s, else 2048 and 256."""
    if gpu.memory_bytes >= 70 * GIB and not gpu.name.startswith("a100"):
        return BatchDefaults(8192, 1024)
    return BatchDefaults(2048, 256)


def activation_peak_bytes(model: ModelArch, max_num_batched_tokens: int) -> int:
    """Peak activation of vLLM's profile run ≈ batched tokens * hidden * 48 B (heuristic)."""
    return max_num_batched_tokens * model.hidden_size * ACTIVATION_BYTES_PER_TOKEN_HIDDEN


def runtime_overhead_bytes(gpu_bytes: int, tp: int) -> int:
    """Non-torch memory (CUDA context, NCCL) and CUDA graphs, as vllm-wizard estimates them:
    ``max(1 GiB, 2 % of VRAM) + 0.25 GiB * (TP - 1)``."""
    return int(max(GIB, 0.02 * gpu_bytes) + 0.25 * GIB * (tp - 1))


class MemoryBudget(NamedTuple):
    """One GPU of a replica, in bytes. ``kv_pool`` is negative when the weights do not fit."""

    gpu: int
    usable: int
    weights: int
    activation: int
    overhead: int
    kv_pool: int


def vllm_memory_budget(gpu_bytes: int, gpu_memory_utilization: float, weights_per_gpu: int,
                       activation: int, overhead: int) -> MemoryBudget:
    """vLLM's KV pool per GPU = total * gpu_memory_utilization - (weights + peak activation
    + non-torch and CUDA-graph memory) (``vllm/v1/worker/gpu_worker.py`` profiling)."""
    usable = int(gpu_bytes * gpu_memory_utilization)
    kv_pool = usable - weights_per_gpu - activation - overhead
    return MemoryBudget(gpu_bytes, usable, weights_per_gpu, activation, overhead, kv_pool)


def max_concurrent_sequences(kv_pool_bytes: int, kv_bytes_per_seq: int, max_num_seqs: int) -> int:
    """Sequences of a given length whose KV fits the pool at once, capped by max_num_seqs
    (vLLM's "Maximum concurrency for N tokens per request")."""
    if kv_pool_bytes <= 0:
        return 0
    if kv_bytes_per_seq == 0:
        return max_num_seqs
    return min(max_num_seqs, kv_pool_bytes // kv_bytes_per_seq)


def valid_tensor_parallel(model: ModelArch, tp: int) -> bool:
    """vLLM splits attention heads evenly: heads % TP == 0, and KV heads either split
    evenly (kv % TP == 0) or are replicated (TP % kv == 0)."""
    if model.heads % tp:
        return False
    return all(
        group.kind == "mla" or group.kv_heads % tp == 0 or tp % group.kv_heads == 0
        for group in model.attention
    )


def tensor_parallel_options(model: ModelArch, gpus: int) -> list[int]:
    """TP degrees that use whole GPUs of a ``gpus``-GPU machine: powers of two dividing it."""
    return [tp for tp in (1, 2, 4, 8) if tp <= gpus and gpus % tp == 0 and valid_tensor_parallel(model, tp)]


def tensor_parallel_needed(model: ModelArch, quant: QuantFormat, gpu: GpuSpec, gpus: int, *,
                           context_tokens: int, kv_dtype: str = "auto",
                           gpu_memory_utilization: float = 0.9) -> int | None:
    """The smallest TP (on a ``gpus``-GPU machine) whose per-GPU KV pool holds one sequence
    of ``context_tokens`` — the condition for vLLM to start at that max_model_len. ``None``
    when even TP = ``gpus`` is not enough."""
    batched, _ = vllm_batch_defaults(gpu)
    weights = model_weight_bytes(model, quant)
    for tp in tensor_parallel_options(model, gpus):
        budget = vllm_memory_budget(gpu.memory_bytes, gpu_memory_utilization, math.ceil(weights / tp),
                                    activation_peak_bytes(model, batched), runtime_overhead_bytes(gpu.memory_bytes, tp))
        need = kv_bytes_per_sequence(model, context_tokens, kv_dtype=kv_dtype, tp=tp, max_num_batched_tokens=batched)
        if budget.kv_pool >= need:
            return tp
    return None
