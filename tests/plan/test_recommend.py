"""Ranked options: TP choice, the PCIe warning, replicas, budget, on-prem, and the reasons."""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.catalog.models import find_model
from corral.catalog.quant import find_quant
from corral.plan.advice import make_plan
from corral.plan.recommend import PlanRequest, Workload, plan_options


def _request(model: str, quant: str, **fields) -> PlanRequest:
    workload = {key: fields.pop(key) for key in list(fields) if key in Workload.__dataclass_fields__}
    workload.setdefault("context_tokens", 8192)
    return PlanRequest(model=find_model(model), quant=find_quant(quant), workload=Workload(**workload), **fields)


def test_workload_required_rate_is_the_larger_of_rpm_and_tpm():
    work = Workload(context_tokens=8192, input_tokens=800, output_tokens=200, target_tpm=60_000, target_rpm=120)
    assert work.required_requests_per_s() == 2.0  # 120/min beats 60,000 / 1,000 tokens = 60/min
    assert replace(work, target_rpm=None).required_requests_per_s() == 1.0
    assert Workload(context_tokens=8192).required_requests_per_s() is None


def test_llama_8b_fp8_32_sequences_of_8k():
    plan = make_plan(_request("llama-3.1-8b", "fp8", concurrency=32, input_tokens=2048, output_tokens=256))
    top = plan.top
    assert top.instance == "g6.xlarge" and top.tp == 1
    # an L4 holds 11 sequences of 8k (1 GiB each) -> 32 needs 3 replicas, one per instance
    assert top.sequences_at_context == 11
    assert top.replicas == 3 and top.instances == 3
    assert top.monthly_usd == pytest.approx(3 * 0.8048 * 730)
    assert [option.rank_key() for option in plan.options] == sorted(option.rank_key() for option in plan.options)
    assert any("11 sequences of 8,192 tokens" in reason for reason in plan.reasons)
    assert any(reason.startswith("cost: $0.8048/h x 3 x 730 h = $1,763/month") for reason in plan.reasons)


def test_one_gpu_models_become_replicas_not_tensor_parallel():
    plan = make_plan(_request("llama-3.1-8b", "bf16", concurrency=4, gpus=("l40s",)))
    four = next(option for option in plan.options if option.instance == "g6e.12xlarge")
    assert four.tp == 1 and four.replicas == 4
    assert not any("PCIe" in warning for warning in four.warnings)


def test_the_l40s_trap_is_flagged_and_nvlink_is_not():
    plan = make_plan(_request("llama-3.1-70b", "fp8", concurrency=8, context_tokens=32768, gpus=("l40s", "h100")))
    l40s = next(option for option in plan.options if option.instance == "g6e.12xlarge")
    assert l40s.tp == 4 and l40s.interconnect == "pcie"
    assert any("TP=4 over PCIe" in warning and "L40S trap" in warning for warning in l40s.warnings)
    assert l40s.prefill_comm_share > 0.3
    h100 = next(option for option in plan.options if option.instance == "p5.48xlarge")
    assert h100.tp > 1 and not any("PCIe" in warning for warning in h100.warnings)
    assert h100.prefill_comm_share < l40s.prefill_comm_share / 3


def test_a_model_too_big_for_one_instance_spans_two_with_pipeline_parallelism():
    options = plan_options(_request("deepseek-r1", "fp8", context_tokens=16384, gpus=("h100",)))
    p5 = next(option for option in options if option.instance == "p5.48xlarge")
    assert (p5.tp, p5.pp, p5.instances) == (8, 2, 2)
    assert any("spans 2 instances" in warning for warning in p5.warnings)
    one_gpu = next(option for option in options if option.instance == "p5.4xlarge")
    assert not one_gpu.fits and "exceed" in one_gpu.why_not


def test_deepseek_on_h200_replicates_the_mla_cache_on_every_rank():
    options = plan_options(_request("deepseek-r1", "fp8", context_tokens=65536, gpus=("h200",)))
    p5en = next(option for option in options if option.instance == "p5en.48xlarge")
    assert p5en.fits and p5en.tp == 8 and p5en.pp == 1
    assert p5en.kv_gib_per_sequence == pytest.approx(70_272 * 65536 / 1024**3)
    assert any("MLA" in warning for warning in p5en.warnings)
    p5e = next(option for option in options if option.instance == "p5e.48xlarge")
    assert p5e.monthly_usd is None and options.index(p5e) > options.index(p5en)


def test_budget_ranks_affordable_options_first():
    plan = make_plan(_request("llama-3.1-8b", "bf16", concurrency=16, budget_usd=1500))
    assert plan.top.within_budget is True
    over = [option for option in plan.options if option.within_budget is False]
    assert over and all(plan.options.index(option) > 0 for option in over)


def test_on_prem_boxes_are_priced_per_gpu_hour():
    options = plan_options(_request("llama-3.1-70b", "fp8", gpus=("h100",), on_prem=True, gpu_hour_usd=2.0))
    assert {option.instance for option in options} <= {f"on-prem {n}xh100" for n in (1, 2, 4, 8)}
    # one H100: 65.8 GiB of fp8 weights + 4.6 GiB runtime leave 1.3 GiB, short of one 8k sequence (2.5 GiB)
    assert not next(option for option in options if option.instance == "on-prem 1xh100").fits
    top = options[0]
    assert top.instance == "on-prem 2xh100" and top.monthly_usd == pytest.approx(2 * 2.0 * 730)
    unpriced = plan_options(_request("llama-3.1-8b", "fp8", gpus=("l4",), on_prem=True))
    assert all(option.monthly_usd is None for option in unpriced)


def test_reserved_pricing_and_hours_scale_the_monthly_cost():
    base = make_plan(_request("llama-3.1-8b", "bf16")).top
    reserved = make_plan(_request("llama-3.1-8b", "bf16", pricing="reserved-3y")).top
    assert reserved.monthly_usd == pytest.approx(base.monthly_usd * 0.4)
    business = make_plan(_request("llama-3.1-8b", "bf16", hours_per_month=264)).top
    assert business.monthly_usd == pytest.approx(base.monthly_usd * 264 / 730)


def test_throughput_target_adds_replicas():
    one = make_plan(_request("llama-3.1-8b", "fp8", gpus=("l40s",))).top
    many = make_plan(_request("llama-3.1-8b", "fp8", gpus=("l40s",), target_rpm=one.requests_per_min * 2.5)).top
    assert many.replicas >= 3


def test_an_impossible_tpot_target_is_reported():
    plan = make_plan(_request("llama-3.1-70b", "bf16", gpus=("l40s",), tpot_slo_s=0.001))
    assert plan.options[0].fits and not plan.options[0].meets_slo
    assert plan.options[0].batch == 1
    assert any("no option meets the TTFT/TPOT targets" in reason for reason in plan.reasons)


def test_nothing_fits():
    plan = make_plan(_request("deepseek-r1", "fp8", gpus=("l4",)))
    assert plan.top is None
    assert plan.reasons[0].startswith("nothing fits: weights")


def test_sliding_window_reasoning_and_encoders():
    plan = make_plan(_request("gemma-3-27b", "bf16", context_tokens=32768))
    assert any("SlidingWindowSpec" in reason and "3.73 GiB, not 15.50 GiB" in reason for reason in plan.reasons)
    encoder = make_plan(_request("bge-m3", "fp16", context_tokens=8192, output_tokens=0, input_tokens=512))
    assert encoder.top is not None and encoder.top.instance == "g6.xlarge"
    assert any("none (an encoder)" in reason for reason in encoder.reasons)
