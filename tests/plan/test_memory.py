"""Memory formulas against hand-worked numbers (each expectation is written out as the
arithmetic it comes from)."""

from __future__ import annotations

import pytest

from corral.catalog.gpus import find_gpu
from corral.catalog.models import find_model
from corral.catalog.quant import find_quant
from corral.catalog.records import GIB, MIB
from corral.plan.memory import (
    activation_peak_bytes,
    kv_bytes_per_sequence,
    kv_bytes_per_token,
    kv_heads_per_rank,
    kv_tokens_held,
    max_concurrent_sequences,
    model_weight_bytes,
    runtime_overhead_bytes,
    tensor_parallel_needed,
    tensor_parallel_options,
    valid_tensor_parallel,
    vllm_batch_defaults,
    vllm_memory_budget,
    weight_bytes,
)

LLAMA_8B = find_model("llama-3.1-8b")
LLAMA_70B = find_model("llama-3.1-70b")
DEEPSEEK = find_model("deepseek-r1")
GEMMA_27B = find_model("gemma-3-27b")
GPT_OSS_20B = find_model("gpt-oss-20b")


def test_weights_are_params_times_bytes_per_param():
    assert weight_bytes(8.03e9, 2) == 16_060_000_000
    assert weight_bytes(8.03e9, 1) == 8_030_000_000
    assert model_weight_bytes(LLAMA_8B, find_quant("fp8")) == 8_030_000_000
    assert model_weight_bytes(LLAMA_8B, find_quant("awq")) == 4_265_937_500  # 8.03e9 * 4.25 / 8
    # gpt-oss in its native MXFP4 is counted at its checkpoint size (bf16 attention included)
    assert model_weight_bytes(GPT_OSS_20B, find_quant("mxfp4")) == int(12.8 * GIB)
    assert model_weight_bytes(GPT_OSS_20B, find_quant("bf16")) == 41_800_000_000


def test_llama_3_1_8b_kv_is_128_kib_per_token_in_bf16():
    # 2 (K and V) x 32 layers x 8 KV heads x 128 head dim x 2 bytes
    assert kv_bytes_per_token(LLAMA_8B) == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert kv_bytes_per_token(LLAMA_8B, "fp8") == 64 * 1024
    # from attention heads (32) instead of KV heads: the classic 4x overestimate
    assert 2 * 32 * 32 * 128 * 2 == 4 * kv_bytes_per_token(LLAMA_8B)


def test_deepseek_mla_kv_is_70272_bytes_per_token():
    # one latent per layer: 61 x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes, no factor 2
    assert kv_bytes_per_token(DEEPSEEK) == 61 * 576 * 2 == 70_272
    assert kv_bytes_per_token(DEEPSEEK, "fp8") == 61 * 576 == 35_136
    assert kv_bytes_per_token(DEEPSEEK, "fp8_ds_mla") == 61 * 656 == 40_016


def test_tensor_parallel_splits_kv_heads_until_they_must_be_replicated():
    assert kv_heads_per_rank(8, 2) == 4
    assert kv_heads_per_rank(8, 8) == 1
    assert kv_heads_per_rank(4, 8) == 1  # fewer KV heads than ranks: replicated
    assert kv_bytes_per_token(LLAMA_70B, tp=8) == 80 * 2 * 1 * 128 * 2 == 40_960
    assert kv_bytes_per_token(LLAMA_70B, tp=16) == 40_960  # no further saving
    assert kv_bytes_per_token(DEEPSEEK, tp=8) == 70_272  # MLA: every rank keeps the whole latent


def test_sliding_window_layers_hold_window_minus_1_plus_batched_tokens_plus_a_block():
    sliding, full = GEMMA_27B.attention
    # Gemma 3 27B, window 1024, 2048 batched tokens: min(1023 + 2048, 32768) = 3071 tokens
    # -> ceil(3071 / 16) = 192 blocks, + 1 block = 193 blocks = 3088 tokens
    assert kv_tokens_held(sliding, 32768, 2048) == (192 + 1) * 16 == 3088
    assert kv_tokens_held(full, 32768, 2048) == 32768
    # a sequence shorter than the window still gets the extra block in sliding layers
    assert kv_tokens_held(sliding, 300, 2048) == (19 + 1) * 16
    assert kv_tokens_held(full, 300, 2048) == 19 * 16


def test_gemma3_27b_sequence_kv_per_vllm_rule():
    per_token_layer = 2 * 16 * 128 * 2  # 8,192 bytes
    expected = 10 * per_token_layer * 32768 + 52 * per_token_layer * 3088
    assert expected == 3_999_793_152
    assert kv_bytes_per_sequence(GEMMA_27B, 32768, max_num_batched_tokens=2048) == expected
    # 4.2x less than if all 62 layers kept all 32,768 tokens
    assert 62 * per_token_layer * 32768 / expected == pytest.approx(4.16, abs=0.01)


def test_gpt_oss_alternating_sliding_layers_at_8192_batched_tokens():
    per_token_layer = 2 * 8 * 64 * 2  # 2,048 bytes
    sliding_tokens = (-(-(127 + 8192) // 16) + 1) * 16  # (520 + 1) blocks = 8,336 tokens
    assert sliding_tokens == 8336
    expected = 12 * per_token_layer * 131072 + 12 * per_token_layer * sliding_tokens
    assert kv_bytes_per_sequence(GPT_OSS_20B, 131072, max_num_batched_tokens=8192) == expected


def test_vllm_batch_defaults_follow_gpu_memory():
    assert vllm_batch_defaults(find_gpu("h100")) == (8192, 1024)
    assert vllm_batch_defaults(find_gpu("h200")) == (8192, 1024)
    assert vllm_batch_defaults(find_gpu("a100-80gb")) == (2048, 256)  # A100 excluded on purpose
    assert vllm_batch_defaults(find_gpu("l40s")) == (2048, 256)


def test_budget_and_overheads():
    # vllm-wizard: max(1 GiB, 2% of VRAM) + 0.25 GiB per extra TP rank
    assert runtime_overhead_bytes(45776 * MIB, 1) == GIB  # 2% is 915.5 MiB < 1 GiB
    assert runtime_overhead_bytes(45776 * MIB, 4) == int(1.75 * GIB)
    assert runtime_overhead_bytes(100 * GIB, 1) == int(2 * GIB)
    assert activation_peak_bytes(LLAMA_8B, 8192) == 8192 * 4096 * 48  # 1.5 GiB
    budget = vllm_memory_budget(80 * GIB, 0.9, 15 * GIB, GIB, 2 * GIB)
    assert budget.usable == 72 * GIB
    assert budget.kv_pool == (72 - 15 - 1 - 2) * GIB


def test_max_concurrent_sequences():
    assert max_concurrent_sequences(54 * GIB, GIB, 256) == 54
    assert max_concurrent_sequences(54 * GIB, GIB, 32) == 32
    assert max_concurrent_sequences(-GIB, GIB, 256) == 0
    assert max_concurrent_sequences(GIB, 0, 256) == 256  # an encoder keeps no KV


def test_tensor_parallel_must_divide_heads():
    qwen = find_model("qwen2.5-7b")  # 28 heads, 4 KV heads
    assert [tp for tp in (1, 2, 4, 8) if valid_tensor_parallel(qwen, tp)] == [1, 2, 4]
    assert tensor_parallel_options(qwen, 8) == [1, 2, 4]
    assert tensor_parallel_options(LLAMA_8B, 4) == [1, 2, 4]
    assert valid_tensor_parallel(find_model("gemma-3-1b"), 2)  # 1 KV head, replicated
    assert not valid_tensor_parallel(find_model("gemma-3-1b"), 8)  # only 4 attention heads


def test_tensor_parallel_needed():
    h100, l40s = find_gpu("h100"), find_gpu("l40s")
    # Llama 70B bf16 on H100s, 8k context. TP=2: 79.6 GiB x 0.9 = 71.7 GiB usable - 65.7 GiB of
    # weights - 3 GiB activation - 1.8 GiB overhead leaves 1.1 GiB, less than one 8k sequence
    # (80 x 2 x 4 x 128 x 2 x 8192 = 1.25 GiB): TP=4 is needed.
    assert tensor_parallel_needed(LLAMA_70B, find_quant("bf16"), h100, 8, context_tokens=8192) == 4
    assert tensor_parallel_needed(LLAMA_70B, find_quant("fp8"), l40s, 4, context_tokens=32768) == 2
    assert tensor_parallel_needed(LLAMA_70B, find_quant("fp8"), l40s, 4, context_tokens=131072) == 4
    assert tensor_parallel_needed(LLAMA_8B, find_quant("bf16"), find_gpu("l4"), 4, context_tokens=8192) == 1
    # DeepSeek-R1 in fp8 (671 GB) does not fit 8x H100 (8 x 71.7 GiB usable), but fits 8x H200
    assert tensor_parallel_needed(DEEPSEEK, find_quant("fp8"), h100, 8, context_tokens=8192) is None
    assert tensor_parallel_needed(DEEPSEEK, find_quant("fp8"), find_gpu("h200"), 8, context_tokens=65536) == 8
