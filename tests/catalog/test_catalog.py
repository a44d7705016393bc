"""The catalogs: every entry names its sources, marks what is unchecked, and agrees with
the KV-per-token column of planning.md C2."""

from __future__ import annotations

import pytest

from corral.catalog.gpus import GPUS, find_gpu
from corral.catalog.instances import INSTANCES, find_instance, on_prem
from corral.catalog.models import BY_NAME, MODELS, find_model
from corral.catalog.quant import QUANTS, find_quant
from corral.catalog.records import GIB, LayerGroup, Source, weakest_mark
from corral.plan.memory import kv_bytes_per_token

ENTRIES = [*MODELS, *GPUS, *INSTANCES, *QUANTS]
KIB = 1024


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_every_entry_names_a_source(entry):
    assert entry.sources, f"{entry.name} has no source"
    for source in entry.sources:
        assert source.ref.strip(), f"{entry.name}: empty source"
        assert source.mark in ("verified", "secondary", "unverified")


def test_names_and_aliases_are_unique():
    keys = [key for model in MODELS for key in (model.name, *model.aliases)]
    assert len(keys) == len(set(keys)) == len(BY_NAME)
    assert len({gpu.name for gpu in GPUS}) == len(GPUS)
    assert len({instance.name for instance in INSTANCES}) == len(INSTANCES)
    assert find_model("Llama-3-8B") is find_model("llama-3.1-8b")


def test_unverified_values_are_marked_as_such():
    # planning.md marks these ❌: they must not read as checked
    assert find_model("mistral-large-3").mark == "unverified"
    assert find_model("mistral-7b-v0.3").mark == "unverified"
    assert find_instance("g5.48xlarge").usd_per_hour is None
    assert find_instance("g5.48xlarge").mark == "unverified"
    assert find_instance("p5e.48xlarge").usd_per_hour is None  # Capacity Blocks only
    assert find_gpu("a10g").mark == "unverified"  # A10G tensor throughput is a guess
    assert on_prem("h100", 8).mark == "unverified"
    assert on_prem("h100", 8, usd_per_gpu_hour=2.0).usd_per_hour == 16.0


def test_weakest_mark_wins():
    assert weakest_mark((Source("a"), Source("b", "secondary"))) == "secondary"
    assert weakest_mark((Source("a"), Source("b", "unverified"), Source("c", "secondary"))) == "unverified"
    assert weakest_mark((Source("a"),)) == "verified"
    assert str(Source("x", "secondary", "params")) == "◐ x (params)"


def test_every_instance_has_a_catalog_gpu_and_every_model_a_native_format():
    for instance in INSTANCES:
        assert find_gpu(instance.gpu) is not None, instance.name
        assert instance.gpu_count in (1, 4, 8)
    for model in MODELS:
        assert find_quant(model.native_dtype) is not None, model.name
        assert model.active_params <= model.params
        assert (model.experts is None) == (model.experts_per_token is None)


def test_planning_c3_prices():
    assert find_instance("g6e.xlarge").usd_per_hour == 1.861
    assert find_instance("p5.48xlarge").usd_per_hour == 55.04
    assert find_instance("p5en.48xlarge").usd_per_hour == 63.296
    assert find_instance("g6e.12xlarge").gpu_count == 4
    assert find_gpu("l40s").memory_bytes == 45776 * 1024**2
    assert find_gpu("l40s").interconnect == "pcie"
    assert find_gpu("h100").interconnect == "nvlink"


# planning.md C2: KV per token (bf16, all layers) and, for hybrid models, the long-context
# figure counting only the full-attention layers.
@pytest.mark.parametrize(
    ("name", "all_layers", "full_layers_only"),
    [
        ("llama-3.1-8b", 128 * KIB, 128 * KIB),
        ("mistral-7b-v0.3", 128 * KIB, 128 * KIB),
        ("qwen2.5-7b", 56 * KIB, 56 * KIB),
        ("llama-3.1-70b", 320 * KIB, 320 * KIB),
        ("mixtral-8x7b", 128 * KIB, 128 * KIB),
        ("qwen2.5-72b", 320 * KIB, 320 * KIB),
        ("gpt-oss-20b", 48 * KIB, 24 * KIB),
        ("gpt-oss-120b", 72 * KIB, 36 * KIB),
        ("deepseek-r1", 70_272, 70_272),
        ("mistral-large-2", 352 * KIB, 352 * KIB),
        ("gemma-3-270m", 18 * KIB, 3 * KIB),
        ("gemma-3-1b", 26 * KIB, 4 * KIB),
        ("gemma-3-4b", 136 * KIB, 20 * KIB),
        ("gemma-3-12b", 384 * KIB, 64 * KIB),
        ("gemma-3-27b", 496 * KIB, 80 * KIB),
    ],
)
def test_kv_per_token_matches_planning_c2(name, all_layers, full_layers_only):
    model = find_model(name)
    assert kv_bytes_per_token(model) == all_layers
    full = [group for group in model.attention if group.kind != "sliding"]
    assert sum(g.layers * 2 * g.kv_heads * g.head_dim * 2 for g in full if g.kind == "full") + sum(
        g.layers * g.head_dim * 2 for g in full if g.kind == "mla") == full_layers_only


def test_gemma3_pattern_is_five_sliding_to_one_global():
    groups = find_model("gemma-3-27b").attention
    assert [(g.kind, g.layers, g.window) for g in groups] == [("sliding", 52, 1024), ("full", 10, None)]
    assert find_model("gemma-3-1b").attention[0].window == 512
    assert find_model("gemma-3-27b").attention_label == "GQA, 52 sliding (window 1024) + 10 full"
    assert find_model("deepseek-r1").attention_label == "MLA"
    assert find_model("gemma-3-1b").attention_label.startswith("MQA")
    assert find_model("minilm-l6-v2").is_encoder and find_model("minilm-l6-v2").layers == 6


def test_layer_groups_reject_inconsistent_shapes():
    with pytest.raises(ValueError, match="sliding group needs a window"):
        LayerGroup(4, "sliding", 8, 128)
    with pytest.raises(ValueError, match="kv_heads is 1"):
        LayerGroup(4, "mla", 8, 576)


def test_quant_bytes_include_scale_overhead():
    assert find_quant("bf16").bytes_per_param == 2
    assert find_quant("fp8").bytes_per_param == 1
    assert find_quant("awq").bytes_per_param == pytest.approx(0.53125)  # 4 + 0.25 bits of group-128 scales
    assert find_quant("mxfp4").bytes_per_param == pytest.approx(0.53125)  # 4 + 8/32 bits
    assert find_quant("q4_k_m").bytes_per_param == pytest.approx(0.6125)  # llama.cpp: ~4.9 bits/weight
    # Llama-3-8B at Q4_K_M: llama.cpp lists 4.58 GiB (planning.md C1)
    assert 8.03e9 * find_quant("q4_k_m").bytes_per_param / GIB == pytest.approx(4.58, abs=0.01)
