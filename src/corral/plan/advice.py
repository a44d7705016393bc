"""A plan: the ranked options and, in words, why the top one was picked."""

from __future__ import annotations

from dataclasses import dataclass

from corral.catalog.gpus import find_gpu
from corral.catalog.records import GIB
from corral.plan.memory import (
    kv_bytes_per_sequence,
    kv_bytes_per_token,
    model_weight_bytes,
    tensor_parallel_needed,
    vllm_batch_defaults,
)
from corral.plan.recommend import Option, PlanRequest, plan_options


@dataclass(frozen=True)
class Plan:
    request: PlanRequest
    options: tuple[Option, ...]
    reasons: tuple[str, ...]

    @property
    def top(self) -> Option | None:
        return self.options[0] if self.options and self.options[0].fits else None


def make_plan(request: PlanRequest) -> Plan:
    options = tuple(plan_options(request))
    return Plan(request, options, tuple(explain(request, options)))


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB".replace(".0 KiB", " KiB")


def _memory_reasons(request: PlanRequest, top: Option) -> list[str]:
    model, quant, work = request.model, request.quant, request.workload
    gpu = find_gpu(top.gpu)
    assert gpu is not None
    batched, max_seqs = vllm_batch_defaults(gpu)
    weights = model_weight_bytes(model, quant)
    per_param = (f"the checkpoint's size: {model.notes}" if weights == model.native_weight_bytes
                 else f"{quant.bytes_per_param:g} B/param")
    lines = [f"weights: {model.params / 1e9:,.1f}B parameters in {quant.name} ({per_param}) = {weights / GIB:,.1f} GiB, "
             f"{top.weights_gib:,.1f} GiB per GPU at TP={top.tp}" + (f" x PP={top.pp}" if top.pp > 1 else "")]
    if model.is_encoder:
        return [*lines, "KV cache: none (an encoder); GPU memory goes to weights and activations"]
    per_token = kv_bytes_per_token(model, request.kv_dtype)
    kv = f"KV cache: {_kib(per_token)} per token over all {model.layers} layers ({model.attention_label})"
    full = per_token * work.context_tokens
    held = kv_bytes_per_sequence(model, work.context_tokens, kv_dtype=request.kv_dtype, max_num_batched_tokens=batched)
    if any(group.kind == "sliding" for group in model.attention):
        kv += (f"; sliding-window layers keep only window - 1 + {batched:,} batched tokens (vLLM's SlidingWindowSpec), "
               f"so one {work.context_tokens:,}-token sequence holds {held / GIB:.2f} GiB, not {full / GIB:.2f} GiB "
               "(with vLLM's hybrid KV allocator on)")
    elif any(group.kind == "mla" for group in model.attention):
        kv += f"; MLA caches one latent per token, one {work.context_tokens:,}-token sequence holds {held / GIB:.2f} GiB"
    else:
        kv += f"; one {work.context_tokens:,}-token sequence holds {held / GIB:.2f} GiB"
    lines.append(kv)
    lines.append(f"budget: {gpu.label} x {request.gpu_memory_utilization:g} gpu_memory_utilization, minus weights, "
                 f"activations and CUDA graphs/NCCL, leaves {top.kv_pool_gib:,.1f} GiB of KV per GPU: "
                 f"{top.sequences_at_context:,} sequences of {work.context_tokens:,} tokens per replica "
                 f"(vLLM default max_num_seqs {max_seqs:,})")
    return lines


def _parallel_reason(request: PlanRequest, top: Option) -> str:
    if top.tp == 1 and top.pp == 1:
        spread = (f"; its {top.gpus_per_instance} GPUs run {top.gpus_per_instance} replicas (data parallel), "
                  "which needs no GPU-to-GPU traffic" if top.gpus_per_instance > 1 else "")
        return "TP=1: the model and its KV fit one GPU" + spread
    gpu = find_gpu(top.gpu)
    assert gpu is not None
    needed = tensor_parallel_needed(request.model, request.quant, gpu, top.gpus_per_instance,
                                    context_tokens=request.workload.context_tokens, kv_dtype=request.kv_dtype,
                                    gpu_memory_utilization=request.gpu_memory_utilization)
    if top.pp > 1:
        text = (f"TP={top.tp} x PP={top.pp}: the weights do not fit one {top.gpus_per_instance}-GPU instance, "
                f"so each replica spans {top.pp}")
    elif needed is not None and needed < top.tp:
        text = (f"TP={top.tp}: TP={needed} already holds one {request.workload.context_tokens:,}-token sequence, "
                f"but TP={top.tp} frees more memory per GPU for KV ({top.sequences_at_context} sequences per "
                "replica), which is cheaper for this workload")
    else:
        text = f"TP={top.tp}: the smallest degree whose share of the weights leaves room for a full-context sequence"
    link = "NVLink" if top.interconnect == "nvlink" else "PCIe"
    text += f"; ranks talk over {link}"
    if top.interconnect == "pcie":
        text += f", and all-reduces take about {top.prefill_comm_share:.0%} of prefill time"
    return text


def _cheaper_reason(options: tuple[Option, ...], top: Option) -> str | None:
    if top.usd_per_hour is None:
        return None
    cheaper = [o for o in options if o is not top and o.usd_per_hour is not None and o.usd_per_hour < top.usd_per_hour
               and (not o.fits or not o.meets_slo or o.within_budget is False)]
    if not cheaper:
        return None
    near = max(cheaper, key=lambda o: o.usd_per_hour or 0.0)
    why = near.why_not if not near.fits else ("misses the SLOs" if not near.meets_slo else "is over budget")
    return f"cheaper per hour but not chosen: {near.instance} ({near.gpu_label}): {why}"


def explain(request: PlanRequest, options: tuple[Option, ...]) -> list[str]:
    """The reasoning behind the top pick, one line per step of the calculation."""
    if not options or not options[0].fits:
        closest = options[0].why_not if options else "no instance with that GPU"
        return [f"nothing fits: {closest}",
                "try a shorter --context, --quant fp8 or awq, --kv-dtype fp8, or a larger GPU (--gpu h200, b200)"]
    top, work = options[0], request.workload
    lines = _memory_reasons(request, top)
    lines.append(_parallel_reason(request, top))
    if work.output_tokens:
        lines.append(f"speed: decode at batch {top.batch} takes {top.step_s * 1e3:,.1f} ms per step; prefilling "
                     f"{work.input_tokens:,} tokens takes {top.prefill_s:,.2f} s; under load TTFT ~{top.ttft_s:,.2f} s, "
                     f"TPOT ~{top.tpot_s * 1e3:,.0f} ms; {top.output_tokens_per_s:,.0f} output tokens/s in all")
    sized = [f"concurrency {work.concurrency} at {work.context_tokens:,} tokens"]
    required = work.required_requests_per_s()
    if required:
        sized.append(f"{required * 60:,.1f} requests/min ({work.input_tokens:,} in + {work.output_tokens:,} out)")
    lines.append(f"replicas: {top.replicas} on {top.instances} x {top.instance}, sized for {' and '.join(sized)}; "
                 f"capacity ~{top.requests_per_min:,.0f} requests/min")
    if top.monthly_usd is not None and top.usd_per_hour is not None:
        per_m = f"; ${top.usd_per_million_tokens:,.3f} per 1M tokens" if top.usd_per_million_tokens else ""
        lines.append(f"cost: ${top.usd_per_hour:,.4g}/h x {top.instances} x {request.hours_per_month:g} h = "
                     f"${top.monthly_usd:,.0f}/month ({request.pricing}){per_m}")
    if not top.meets_slo:
        lines.append("no option meets the TTFT/TPOT targets; this is the closest")
    cheaper = _cheaper_reason(options, top)
    if cheaper:
        lines.append(cheaper)
    lines.extend(f"warning: {warning}" for warning in top.warnings)
    if top.mark != "verified":
        lines.append(f"some catalog values behind this pick are marked {top.mark} (see --json 'sources' and docs/plan.md)")
    lines.append("speeds assume 75% of memory bandwidth and 50% of peak FLOP/s: calibrate with `corral bench` and "
                 "vLLM's 'GPU KV cache size' log line")
    return lines
