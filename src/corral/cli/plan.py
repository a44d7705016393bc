"""`corral plan`: size a model to GPUs, instances and monthly cost, and write its stack file.

    corral plan --model llama-3.1-8b --context 8k --concurrency 32 --quant fp8 [--emit stack.yaml]
    corral plan --scenario small|medium|large
    corral plan --local
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from corral.catalog.gpus import gpu_names
from corral.catalog.models import MODELS, find_model
from corral.catalog.quant import KV_DTYPE_BYTES, find_quant, vllm_quant_names
from corral.catalog.records import ModelArch, QuantFormat
from corral.cli.common import fail
from corral.errors import CorralError
from corral.plan.advice import make_plan
from corral.plan.cost import HOURS_PER_MONTH, PRICING
from corral.plan.emit import emit_stack
from corral.plan.local import SHIPPED, fit, larger_models, this_machine
from corral.plan.recommend import PlanRequest, Workload
from corral.plan.report import (
    local_dict,
    plan_dict,
    render_local,
    render_plan,
    render_scenario,
    scenario_dict,
)
from corral.plan.scenarios import SCENARIOS, run_scenario
from corral.plan.units import parse_tokens


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _tokens(option: str, text: str) -> int:
    try:
        return parse_tokens(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _model(name: str) -> ModelArch:
    model = find_model(name)
    if model is None:
        fail(f"--model: unknown model '{name}'; choose one of: {', '.join(m.name for m in MODELS)}")
    return model


def _quant(name: str | None, model: ModelArch) -> QuantFormat:
    choices = ["native", *vllm_quant_names()]
    quant = find_quant(model.native_dtype if name in (None, "native") else str(name))
    if quant is None or "vllm" not in quant.engines:
        fail(f"--quant: '{name}' is not a weight format vLLM serves; choose one of: {', '.join(choices)} "
             "(GGUF formats are for --local)")
    return quant


def _workload(model: ModelArch, context: str, concurrency: int, input_tokens: str | None, output_tokens: str | None,
              target_tpm: float | None, target_rpm: float | None, ttft_s: float | None,
              tpot_ms: float | None) -> Workload:
    context_tokens = _tokens("--context", context)
    if context_tokens > model.max_context:
        fail(f"--context: {context_tokens:,} tokens exceeds {model.name}'s maximum context of {model.max_context:,}")
    prompt = _tokens("--input-tokens", input_tokens) if input_tokens else min(2048, context_tokens // 2)
    default_output = 0 if model.is_encoder else min(256, context_tokens - prompt)
    answer = _tokens("--output-tokens", output_tokens) if output_tokens else default_output
    if prompt + answer > context_tokens or (answer < 1 and not model.is_encoder):
        fail(f"--input-tokens/--output-tokens: {prompt:,} in + {answer:,} out must fit --context {context_tokens:,} "
             "with at least 1 output token")
    for option, value in (("--target-tpm", target_tpm), ("--target-rpm", target_rpm), ("--ttft-s", ttft_s),
                          ("--tpot-ms", tpot_ms)):
        if value is not None and value <= 0:
            fail(f"{option}: {value:g} must be > 0")
    return Workload(context_tokens=context_tokens, concurrency=concurrency, input_tokens=prompt,
                    output_tokens=0 if model.is_encoder else answer, target_tpm=target_tpm, target_rpm=target_rpm,
                    ttft_slo_s=ttft_s, tpot_slo_s=None if tpot_ms is None else tpot_ms / 1e3)


def _pricing(pricing: str, gpu_memory_utilization: float, hours: float) -> None:
    if pricing not in PRICING:
        fail(f"--pricing: unknown '{pricing}'; choose one of: {', '.join(PRICING)}")
    if not 0 < gpu_memory_utilization <= 1:
        fail(f"--gpu-memory-utilization: {gpu_memory_utilization:g} must be > 0 and <= 1")
    if not 0 < hours <= 744:
        fail(f"--hours-per-month: {hours:g} must be > 0 and <= 744")


def _gpus(names: list[str] | None) -> tuple[str, ...]:
    wanted = tuple(name.lower() for name in names or ())
    for name in wanted:
        if name not in gpu_names():
            fail(f"--gpu: unknown GPU '{name}'; choose one of: {', '.join(gpu_names())}")
    return wanted


def _kv_dtype(name: str, model: ModelArch) -> str:
    if name not in KV_DTYPE_BYTES:
        fail(f"--kv-dtype: unknown '{name}'; choose one of: {', '.join(KV_DTYPE_BYTES)}")
    if name == "fp8_ds_mla" and not any(group.kind == "mla" for group in model.attention):
        fail(f"--kv-dtype: fp8_ds_mla is for MLA models (DeepSeek-style); {model.name} is {model.attention_label}")
    return name


def plan(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to plan (see --help for names).")] = None,
    context: Annotated[str, typer.Option(help="Context per sequence (max_model_len): 8192, 8k, 128k.")] = "8k",
    concurrency: Annotated[int, typer.Option(min=1, help="Sequences that must fit at --context at once.")] = 1,
    quant: Annotated[str | None, typer.Option(help="Weight format: native (default), bf16, fp8, int8, awq, gptq, "
                                                   "mxfp4, nvfp4.")] = None,
    kv_dtype: Annotated[str, typer.Option("--kv-dtype", help="KV cache dtype: auto, fp8, fp8_ds_mla.")] = "auto",
    input_tokens: Annotated[str | None, typer.Option(help="Mean prompt tokens (default: half the context, <= 2k).")] = None,
    output_tokens: Annotated[str | None, typer.Option(help="Mean output tokens (default 256).")] = None,
    target_tpm: Annotated[float | None, typer.Option(help="Tokens per minute to serve (input + output).")] = None,
    target_rpm: Annotated[float | None, typer.Option(help="Requests per minute to serve.")] = None,
    ttft_s: Annotated[float | None, typer.Option("--ttft-s", help="TTFT target, seconds.")] = None,
    tpot_ms: Annotated[float | None, typer.Option("--tpot-ms", help="TPOT target, milliseconds.")] = None,
    gpu: Annotated[list[str] | None, typer.Option(help="Only these GPU kinds (repeatable).")] = None,
    on_prem: Annotated[bool, typer.Option("--on-prem", help="Plan boxes of your own GPUs (1, 2, 4, 8).")] = False,
    gpu_hour_usd: Annotated[float | None, typer.Option(help="On-prem cost per GPU-hour, for $/month.")] = None,
    budget: Annotated[float | None, typer.Option(help="Monthly budget, USD.")] = None,
    pricing: Annotated[str, typer.Option(help="on-demand, reserved-1y, reserved-3y or spot.")] = "on-demand",
    price_multiplier: Annotated[float | None, typer.Option(help="Your own multiplier on on-demand prices.")] = None,
    hours_per_month: Annotated[float, typer.Option(help="Hours running per month.")] = HOURS_PER_MONTH,
    gpu_memory_utilization: Annotated[float, typer.Option(help="vLLM's --gpu-memory-utilization.")] = 0.9,
    top: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 10,
    scenario: Annotated[str | None, typer.Option(help="The seed guide's scenario: small, medium or large.")] = None,
    local: Annotated[bool, typer.Option("--local", help="What fits this machine on CPU.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    emit: Annotated[Path | None, typer.Option(help="Write the top pick as a stack file.")] = None,
) -> None:
    """Size a model to GPUs, instances and monthly cost; explain the pick; write its stack file."""
    modes = [name for name, given in (("--model", model), ("--scenario", scenario), ("--local", local)) if given]
    if len(modes) != 1:
        fail("--model: give one of --model NAME, --scenario small|medium|large or --local"
             + (f" (got {' and '.join(modes)})" if modes else ""))
    if emit is not None and model is None:
        fail("--emit: needs --model (a scenario plans several models; --local plans no GPU)")
    _pricing(pricing, gpu_memory_utilization, hours_per_month)
    if local:
        _local(_tokens("--context", context), json_out)
    elif scenario is not None:
        _scenario(scenario, json_out, pricing=pricing, price_multiplier=price_multiplier,
                  hours_per_month=hours_per_month, gpu_memory_utilization=gpu_memory_utilization)
    else:
        arch = _model(str(model))
        request = PlanRequest(
            model=arch, quant=_quant(quant, arch), kv_dtype=_kv_dtype(kv_dtype, arch),
            workload=_workload(arch, context, concurrency, input_tokens, output_tokens, target_tpm, target_rpm,
                               ttft_s, tpot_ms),
            gpus=_gpus(gpu), on_prem=on_prem, gpu_hour_usd=gpu_hour_usd, budget_usd=budget, pricing=pricing,
            price_multiplier=price_multiplier, hours_per_month=hours_per_month,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        _plan(request, json_out, top, emit)


def _plan(request: PlanRequest, json_out: bool, top: int, emit: Path | None) -> None:
    result = make_plan(request)
    if not result.options:
        fail("--gpu: no instance has that GPU; add --on-prem to plan boxes of your own")
    if json_out:
        _print_json(plan_dict(result))
    else:
        render_plan(result, _console(), top)
    if emit is not None:
        try:
            emit_stack(result, emit)
        except CorralError as exc:
            fail(str(exc))
        if not json_out:
            _console().print(f"\nwrote {emit}: load it with `corral models {emit}`", highlight=False)


def _scenario(name: str, json_out: bool, **overrides: object) -> None:
    if name not in SCENARIOS:
        fail(f"--scenario: unknown scenario '{name}'; choose one of: {', '.join(SCENARIOS)}")
    result = run_scenario(name, **overrides)
    if json_out:
        _print_json(scenario_dict(result))
    else:
        render_scenario(result, _console())


def _local(context_tokens: int, json_out: bool) -> None:
    try:
        machine = this_machine()
    except (OSError, ValueError) as exc:
        fail(f"--local: cannot read this machine's memory from /proc/meminfo: {exc}")
    fits = [fit(shipped, machine, context_tokens) for shipped in SHIPPED]
    larger = larger_models(machine, context_tokens)
    if json_out:
        _print_json(local_dict(machine, fits, larger, context_tokens))
    else:
        render_local(machine, fits, larger, context_tokens, _console())
