"""Speed formulas against hand-worked numbers."""

from __future__ import annotations

import pytest

from corral.catalog.gpus import find_gpu
from corral.catalog.models import find_model
from corral.catalog.quant import find_quant
from corral.plan.throughput import (
    Efficiency,
    allreduce_s,
    attention_flops,
    decode_step_s,
    experts_touched_fraction,
    kv_bytes_read_per_step,
    loaded_tpot_s,
    prefill_s,
    replica_performance,
    replicas_for_throughput,
    tensor_parallel_comm_s,
    weight_bytes_read_per_step,
)

LLAMA_8B = find_model("llama-3.1-8b")
MIXTRAL = find_model("mixtral-8x7b")
H100 = find_gpu("h100")
L40S = find_gpu("l40s")
BF16 = find_quant("bf16")


def test_experts_touched():
    assert experts_touched_fraction(1, 8, 2) == 0.25
    assert experts_touched_fraction(2, 8, 2) == pytest.approx(1 - 0.75**2)
    assert experts_touched_fraction(64, 256, 8) == pytest.approx(1 - (1 - 8 / 256) ** 64)


def test_moe_reads_its_active_parameters_at_batch_1_and_all_of_them_at_large_batch():
    weights = 46_700_000_000
    assert weight_bytes_read_per_step(MIXTRAL, weights, 1) == pytest.approx(weights * 12.9 / 46.7)
    assert weight_bytes_read_per_step(MIXTRAL, weights, 256) == pytest.approx(weights, rel=1e-6)
    assert weight_bytes_read_per_step(LLAMA_8B, 16_060_000_000, 1) == 16_060_000_000


def test_kv_read_counts_only_the_window_in_sliding_layers():
    assert kv_bytes_read_per_step(LLAMA_8B, 4, 1000, "auto", 1) == 4 * 131_072 * 1000
    gemma = find_model("gemma-3-27b")
    # 52 sliding layers read 1024 tokens, 10 full layers read 4096; 8,192 bytes per token and layer
    assert kv_bytes_read_per_step(gemma, 1, 4096, "auto", 1) == 8192 * (52 * 1024 + 10 * 4096)


def test_allreduce_and_tensor_parallel_communication():
    assert allreduce_s(H100, 1, 1e6) == 0.0
    # ring: latency + bytes x 2(TP-1)/TP / (link x efficiency): 10 us + 1e6 x 1.75 / 315e9
    assert allreduce_s(H100, 8, 1e6) == pytest.approx(10e-6 + 1e6 * 1.75 / (450e9 * 0.7))
    assert allreduce_s(L40S, 4, 1e6) == pytest.approx(30e-6 + 1e6 * 1.5 / (32e9 * 0.7))
    # two all-reduces per layer of tokens x hidden x 2 bytes
    assert tensor_parallel_comm_s(LLAMA_8B, H100, 2, 100) == pytest.approx(
        2 * 32 * allreduce_s(H100, 2, 100 * 4096 * 2))


def test_decode_step_is_memory_bound_at_small_batch():
    # Llama 3.1 8B bf16 on one H100, one sequence of 1,000 tokens:
    # (16.06e9 weights + 131,072 x 1,000 KV) / (3.35e12 x 0.75) = 6.44 ms
    expected = (16_060_000_000 + 131_072 * 1000) / (3.35e12 * 0.75)
    step = decode_step_s(LLAMA_8B, BF16, 16_060_000_000, H100, 1, batch=1, context_tokens=1000)
    assert step == pytest.approx(expected)
    assert expected == pytest.approx(6.444e-3, rel=1e-3)


def test_decode_step_turns_compute_bound_at_large_batch():
    eff = Efficiency()
    step = decode_step_s(LLAMA_8B, BF16, 16_060_000_000, H100, 1, batch=4096, context_tokens=10)
    compute = 2 * 8.03e9 * 4096 / (989.4e12 * eff.prefill_compute)
    assert step == pytest.approx(compute)


def test_prefill_from_compute():
    # 2 x 8.03e9 x 1000 + attention 32 x 4 x 32 x 128 x (1000 x 1001 / 2), at 50% of 989.4 TFLOP/s
    attention = 32 * 4 * 32 * 128 * (1000 * 1001 / 2)
    assert attention_flops(LLAMA_8B, 1000) == attention
    expected = (2 * 8.03e9 * 1000 + attention) / (989.4e12 * 0.5)
    assert prefill_s(LLAMA_8B, BF16, H100, 1, 1000) == pytest.approx(expected)
    assert expected == pytest.approx(0.0330, abs=1e-4)
    # fp8 weights use the fp8 tensor cores (twice the FLOP/s), but not on an A100 (none)
    assert prefill_s(LLAMA_8B, find_quant("fp8"), H100, 1, 1000) == pytest.approx(expected / 2, rel=1e-3)
    a100 = find_gpu("a100-80gb")
    assert prefill_s(LLAMA_8B, find_quant("fp8"), a100, 1, 1000) == prefill_s(LLAMA_8B, BF16, a100, 1, 1000)


def test_sliding_window_attention_flops_grow_linearly():
    gemma = find_model("gemma-3-27b")
    sliding, full = gemma.attention
    n, w = 8192, 1024
    expected = (sliding.layers * 4 * 32 * 128 * (n * w - w * (w - 1) / 2)
                + full.layers * 4 * 32 * 128 * (n * (n + 1) / 2))
    assert attention_flops(gemma, n) == pytest.approx(expected)


def test_loaded_tpot_and_replica_capacity():
    assert loaded_tpot_s(0.01, 10, 0.5, 100) == pytest.approx(0.06)  # 10 ms + 10 x 0.5 s / 100 tokens
    perf = replica_performance(LLAMA_8B, BF16, 16_060_000_000, H100, 1, max_batch=64, input_tokens=1000,
                               output_tokens=200)
    assert perf.batch == 64
    # requests/s = 1 / (prefill + output x step / batch)
    assert perf.requests_per_s == pytest.approx(1 / (perf.prefill_s + 200 * perf.step_s / 64))
    assert perf.output_tokens_per_s == pytest.approx(perf.requests_per_s * 200)
    assert perf.ttft_s == pytest.approx(perf.prefill_s + perf.step_s)


def test_tpot_target_limits_the_batch():
    slo = 0.05  # one L40S step of Llama 8B bf16 alone takes 25 ms
    perf = replica_performance(LLAMA_8B, BF16, 16_060_000_000, L40S, 1, max_batch=256, input_tokens=1000,
                               output_tokens=200, tpot_slo_s=slo)
    assert perf.tpot_s <= slo
    bigger = replica_performance(LLAMA_8B, BF16, 16_060_000_000, L40S, 1, max_batch=perf.batch + 1,
                                 input_tokens=1000, output_tokens=200)
    assert bigger.tpot_s > slo


def test_encoders_only_prefill():
    minilm = find_model("minilm-l6-v2")
    perf = replica_performance(minilm, find_quant("fp16"), 45_400_000, L40S, 1, max_batch=256, input_tokens=128,
                               output_tokens=0)
    assert perf.output_tokens_per_s == 0 and perf.requests_per_s == pytest.approx(1 / perf.prefill_s)


def test_replicas_for_throughput():
    assert replicas_for_throughput(10, 3) == 4
    assert replicas_for_throughput(9, 3) == 3
    assert replicas_for_throughput(0.1, 3) == 1
