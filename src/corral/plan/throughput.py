"""Speed: decode from memory bandwidth and batch, prefill from compute, tensor-parallel
communication, and what one replica serves under a workload.

A roofline model (Williams, Waterman and Patterson, "Roofline", CACM 2009), applied to
transformers as in kipply's "Transformer Inference Arithmetic" (2 FLOPs per parameter and
token; decode reads every weight once per step): a decode step reads the weights once for
the whole batch plus each sequence's KV, so it is bound by memory bandwidth until the
batch is large; prefill is bound by compute. The efficiency factors are assumptions, not measurements: calibrate them
against `corral bench` (TPOT and TTFT) on the real machine.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from corral.catalog.records import GpuSpec, ModelArch, QuantFormat
from corral.plan.memory import kv_layer_bytes_per_token

#: bf16 activations travel between TP ranks (2 bytes per hidden element).
ACTIVATION_BYTES = 2
#: MLA prefill attends with 192-dim query/key heads (128 no-rope + 64 rope dims).
MLA_QK_HEAD_DIM = 192


class Efficiency(NamedTuple):
    """Achieved / peak. Assumptions to calibrate with `corral bench`, not sourced figures."""

    decode_bandwidth: float = 0.75
    prefill_compute: float = 0.5
    link: float = 0.7
    nvlink_latency_s: float = 10e-6
    pcie_latency_s: float = 30e-6


DEFAULT_EFFICIENCY = Efficiency()


def experts_touched_fraction(batch: int, experts: int, top_k: int) -> float:
    """Share of a MoE layer's experts a decode step reads: each of ``batch`` tokens picks
    ``top_k`` of ``experts``, so an expert is untouched with probability (1 - k/E)^batch."""
    return 1.0 - (1.0 - top_k / experts) ** batch


def weight_bytes_read_per_step(model: ModelArch, weights_bytes: int, batch: int) -> float:
    """Bytes of weights one decode step reads. Dense: all of them. MoE: the shared part
    plus the touched share of the experts, where expert parameters = (total - active) / (1 - k/E)."""
    if model.experts is None or model.experts_per_token is None:
        return float(weights_bytes)
    routed_share = model.experts_per_token / model.experts
    expert_params = (model.params - model.active_params) / (1.0 - routed_share)
    read_params = (model.params - expert_params) + expert_params * experts_touched_fraction(
        batch, model.experts, model.experts_per_token)
    return weights_bytes * read_params / model.params


def kv_bytes_read_per_step(model: ModelArch, batch: int, context_tokens: int, kv_dtype: str, tp: int) -> float:
    """KV one decode step reads on one GPU: every sequence's cached tokens in every layer,
    only the last ``window`` tokens in sliding-window layers."""
    per_sequence = 0
    for group in model.attention:
        tokens = context_tokens if group.window is None else min(group.window, context_tokens)
        per_sequence += group.layers * kv_layer_bytes_per_token(group, kv_dtype, tp) * tokens
    return float(batch * per_sequence)


def allreduce_s(gpu: GpuSpec, tp: int, message_bytes: float, eff: Efficiency = DEFAULT_EFFICIENCY) -> float:
    """One ring all-reduce: latency + message * 2(TP - 1)/TP / achieved link bandwidth (NCCL's
    bus-bandwidth convention). Zero without TP."""
    if tp <= 1:
        return 0.0
    latency = eff.nvlink_latency_s if gpu.interconnect == "nvlink" else eff.pcie_latency_s
    return latency + message_bytes * 2 * (tp - 1) / tp / (gpu.link_bytes_s * eff.link)


def tensor_parallel_comm_s(model: ModelArch, gpu: GpuSpec, tp: int, tokens: int,
                           eff: Efficiency = DEFAULT_EFFICIENCY) -> float:
    """Megatron-style TP all-reduces twice per layer (after attention and after the MLP) a
    tokens * hidden activation."""
    return 2 * model.layers * allreduce_s(gpu, tp, tokens * model.hidden_size * ACTIVATION_BYTES, eff)


def decode_step_s(model: ModelArch, quant: QuantFormat, weights_bytes: int, gpu: GpuSpec, tp: int, *,
                  batch: int, context_tokens: int, kv_dtype: str = "auto", eff: Efficiency = DEFAULT_EFFICIENCY) -> float:
    """One decode step for ``batch`` sequences of ``context_tokens``:
    max(memory time, compute time) + TP communication, where
    memory = (weights read / TP + KV read) / (bandwidth * efficiency) and
    compute = 2 * active params * batch / (TP * FLOP/s * efficiency)."""
    read = weight_bytes_read_per_step(model, weights_bytes, batch) / tp
    read += kv_bytes_read_per_step(model, batch, context_tokens, kv_dtype, tp)
    memory_s = read / (gpu.memory_bandwidth_bytes_s * eff.decode_bandwidth)
    compute_s = 2 * model.active_params * batch / (tp * gpu.flops(quant.compute) * eff.prefill_compute)
    return max(memory_s, compute_s) + tensor_parallel_comm_s(model, gpu, tp, batch, eff)


def attention_flops(model: ModelArch, prompt_tokens: int) -> float:
    """Causal attention over a prompt: per layer 4 * heads * head_dim * (query, key) pairs
    (QKᵀ and attention * V, 2 FLOPs per multiply-add); pairs = N(N+1)/2, or about N * window
    in sliding-window layers."""
    n = prompt_tokens
    total = 0.0
    for group in model.attention:
        head_dim = MLA_QK_HEAD_DIM if group.kind == "mla" else group.head_dim
        if group.window is not None and n > group.window:
            pairs = n * group.window - group.window * (group.window - 1) / 2
        else:
            pairs = n * (n + 1) / 2
        total += group.layers * 4 * model.heads * head_dim * pairs
    return total


def prefill_s(model: ModelArch, quant: QuantFormat, gpu: GpuSpec, tp: int, prompt_tokens: int,
              eff: Efficiency = DEFAULT_EFFICIENCY) -> float:
    """Prefill time = (2 * active params * N + attention FLOPs) / (TP * FLOP/s * efficiency)
    + TP communication for N tokens."""
    flops = 2 * model.active_params * prompt_tokens + attention_flops(model, prompt_tokens)
    compute_s = flops / (tp * gpu.flops(quant.compute) * eff.prefill_compute)
    return compute_s + tensor_parallel_comm_s(model, gpu, tp, prompt_tokens, eff)


def loaded_tpot_s(step_s: float, batch: int, prefill_time_s: float, output_tokens: int) -> float:
    """TPOT while the replica runs at capacity: prefills interleave with decode steps, so a
    token waits for its step plus its share of prefill, ``step + batch * prefill / output``."""
    return step_s + batch * prefill_time_s / max(output_tokens, 1)


class ReplicaPerformance(NamedTuple):
    batch: int
    step_s: float
    prefill_s: float
    ttft_s: float
    tpot_s: float
    requests_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    prefill_comm_share: float


def replica_performance(model: ModelArch, quant: QuantFormat, weights_bytes: int, gpu: GpuSpec, tp: int, *,
                        max_batch: int, input_tokens: int, output_tokens: int, kv_dtype: str = "auto",
                        tpot_slo_s: float | None = None, eff: Efficiency = DEFAULT_EFFICIENCY) -> ReplicaPerformance:
    """What one replica serves at capacity. Each request costs its prefill plus 1/batch of
    ``output`` decode steps, so requests/s = 1 / (prefill + output * step / batch). The batch
    is the largest ≤ ``max_batch`` whose loaded TPOT meets ``tpot_slo_s`` (at least 1)."""
    prefill = prefill_s(model, quant, gpu, tp, input_tokens, eff)
    comm = tensor_parallel_comm_s(model, gpu, tp, input_tokens, eff)
    mean_context = input_tokens + output_tokens // 2

    def step(batch: int) -> float:
        return decode_step_s(model, quant, weights_bytes, gpu, tp, batch=batch, context_tokens=mean_context,
                             kv_dtype=kv_dtype, eff=eff)

    batch = max(1, max_batch)
    if output_tokens == 0:  # an encoder: prefill only
        rps = 1.0 / prefill
        return ReplicaPerformance(batch, 0.0, prefill, prefill, 0.0, rps, 0.0, rps * input_tokens, comm / prefill)
    if tpot_slo_s is not None:
        low, high = 1, batch
        while low < high:  # loaded TPOT grows with the batch: the largest batch meeting the SLO
            middle = (low + high + 1) // 2
            if loaded_tpot_s(step(middle), middle, prefill, output_tokens) <= tpot_slo_s:
                low = middle
            else:
                high = middle - 1
        batch = low
    step_s = step(batch)
    rps = 1.0 / (prefill + output_tokens * step_s / batch)
    return ReplicaPerformance(
        batch=batch, step_s=step_s, prefill_s=prefill, ttft_s=prefill + step_s,
        tpot_s=loaded_tpot_s(step_s, batch, prefill, output_tokens), requests_per_s=rps,
        output_tokens_per_s=rps * output_tokens, total_tokens_per_s=rps * (input_tokens + output_tokens),
        prefill_comm_share=comm / prefill if prefill > 0 else 0.0,
    )


def replicas_for_throughput(required_requests_per_s: float, replica_requests_per_s: float) -> int:
    """Replicas = ⌈required requests/s ÷ one replica's requests/s at capacity⌉."""
    return max(1, math.ceil(required_requests_per_s / replica_requests_per_s - 1e-9))
