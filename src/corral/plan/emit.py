"""A plan's pick as a stack file: one vLLM model with its replicas, TP, quantization and
GPUs, validated by corral's own loader before it is written (and read later by
`corral deploy`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import yaml

from corral.config import StackConfig, parse_stack
from corral.errors import ConfigError
from corral.plan.advice import Plan
from corral.plan.recommend import Option

#: Our KV dtype names -> vLLM's --kv-cache-dtype values.
VLLM_KV_DTYPE = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp8": "fp8", "fp8_ds_mla": "fp8_ds_mla"}


def stack_document(plan: Plan, option: Option | None = None) -> dict[str, Any]:
    """The stack file's content for ``option`` (default: the plan's top pick)."""
    pick = option or plan.top
    request = plan.request
    model, quant = request.model, request.quant
    if pick is None or not pick.fits:
        raise ConfigError("--emit: no option fits, so there is no stack to write")
    if model.task not in ("chat", "completion", "embedding"):
        raise ConfigError(f"--emit: {model.name} is a {model.task} model; corral serves chat, completion and embedding")
    native = quant.name == model.native_dtype
    vllm: dict[str, Any] = {
        "tensor_parallel_size": pick.tp,
        "pipeline_parallel_size": pick.pp,
        "quantization": None if native else quant.vllm_quantization,
        "kv_cache_dtype": VLLM_KV_DTYPE[request.kv_dtype],
        "gpu_memory_utilization": request.gpu_memory_utilization,
        "max_num_seqs": pick.batch,
        "enable_prefix_caching": True,
    }
    entry = {
        "name": model.name,
        "aliases": list(model.aliases),
        "task": model.task,
        "engine": "vllm",
        "source": model.hf_repo,
        "replicas": pick.replicas,
        "context_length": request.workload.context_tokens,
        "vllm": vllm,
        "gpu": {"type": pick.gpu, "count": pick.tp * pick.pp, "instance": pick.instance},
    }
    return {"models": [entry]}


def _header(plan: Plan, pick: Option) -> str:
    request = plan.request
    pricing = "at the given $/GPU-hour" if pick.provider == "on-prem" else request.pricing
    cost = f"${pick.monthly_usd:,.0f}/month {pricing}" if pick.monthly_usd is not None else "no price"
    lines = [
        f"corral stack file written by `corral plan` on {date.today().isoformat()}",
        f"plan: {request.model.name} ({request.quant.name}) on {pick.instances} x {pick.instance} "
        f"({pick.gpu_label}), TP={pick.tp}, PP={pick.pp}, {pick.replicas} replica(s); {cost}",
        f"workload: {request.workload.concurrency} concurrent sequence(s) of {request.workload.context_tokens:,} tokens; "
        f"max_num_seqs is the batch that meets the TPOT target",
        "`corral deploy` starts the vLLM replicas; `corral up` cannot run them on this machine.",
    ]
    if request.quant.prequantized and request.quant.name != request.model.native_dtype:
        lines.append(f"source: point it at a {request.quant.name.upper()} checkpoint of {request.model.hf_repo}")
    return "".join(f"# {line}\n" for line in lines)


def emit_stack(plan: Plan, path: Path) -> StackConfig:
    """Validate the top pick's stack with corral's loader, then write it to ``path``."""
    document = stack_document(plan)
    config = parse_stack(document, origin=f"--emit {path}")
    assert plan.top is not None
    text = _header(plan, plan.top) + yaml.safe_dump(document, sort_keys=False)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--emit: cannot write {path}: {exc.strerror}") from None
    return config
