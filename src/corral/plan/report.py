"""Plans as rich tables with their reasoning, and as JSON. Printing only: every number
comes from recommend, advice, scenarios and local."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from corral.catalog.gpus import find_gpu
from corral.catalog.instances import find_instance
from corral.catalog.records import GIB, MARK_SYMBOL, Source
from corral.plan.advice import Plan
from corral.plan.local import LargerFit, LocalFit, Machine
from corral.plan.memory import kv_bytes_per_token
from corral.plan.recommend import Option
from corral.plan.scenarios import ScenarioResult


def _usd(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"${value:,.{digits}f}"


def _fits(option: Option) -> str:
    if not option.fits:
        return "[red]no[/]"
    if not option.meets_slo:
        return "[yellow]yes, misses SLO[/]"
    if option.within_budget is False:
        return "[yellow]yes, over budget[/]"
    return "[green]yes[/]"


def _parallel(option: Option) -> str:
    return f"{option.tp}" + (f" x PP {option.pp}" if option.pp > 1 else "")


def options_table(plan: Plan, top_n: int) -> Table:
    request = plan.request
    work = request.workload
    title = (f"{request.model.name} ({request.quant.name}, KV {request.kv_dtype}) · {work.context_tokens:,}-token context"
             f" · {work.concurrency} concurrent · {work.input_tokens:,} in / {work.output_tokens:,} out · "
             f"{request.pricing}, {request.hours_per_month:g} h/month")
    table = Table(title=title, title_justify="left")
    for column in ("#", "instance", "GPUs", "TP", "replicas", "fits", "headroom", "seqs/replica", "out tok/s",
                   "TTFT s", "TPOT ms", "$/month", "$/1M tok", "src"):
        table.add_column(column, justify="left" if column in ("instance", "GPUs", "fits") else "right")
    for index, option in enumerate(plan.options[:top_n], start=1):
        gpus = f"{max(option.instances, 1) * option.gpus_per_instance}x {option.gpu_label}"
        if option.fits:
            row = [str(option.replicas), _fits(option), f"{option.headroom_pct:.0f}%", f"{option.sequences_at_context:,}",
                   f"{option.output_tokens_per_s:,.0f}", f"{option.ttft_s:.2f}", f"{option.tpot_s * 1e3:.0f}",
                   _usd(option.monthly_usd), _usd(option.usd_per_million_tokens, 3)]
        else:
            row = ["-", _fits(option), "-", "0", "-", "-", "-", _usd(option.monthly_usd), "-"]
        table.add_row(str(index), option.instance, gpus, _parallel(option), *row, MARK_SYMBOL[option.mark])
    return table


def render_plan(plan: Plan, console: Console, top_n: int = 10) -> None:
    console.print(options_table(plan, top_n))
    unfit = [option for option in plan.options[:top_n] if not option.fits]
    for option in unfit:
        console.print(f"  [dim]{option.instance}: {option.why_not}[/]", highlight=False)
    top = plan.top
    heading = f"why {top.instance} (TP={top.tp}, {top.replicas} replica(s))" if top else "no fit"
    console.print(f"\n[bold]{heading}[/]")
    for reason in plan.reasons:
        console.print(f"  - {reason}", highlight=False)
    console.print("[dim]src: ✅ verified in the cited source · ◐ from a copy · ❌ unverified (weakest value behind "
                  "the row; see --json)[/]")


def _sources(sources: tuple[Source, ...]) -> list[dict[str, str]]:
    return [{"ref": source.ref, "mark": source.mark, "covers": source.covers} for source in sources]


def plan_dict(plan: Plan) -> dict[str, Any]:
    request, model = plan.request, plan.request.model
    gpus = {option.gpu for option in plan.options}
    instances = {option.instance for option in plan.options}
    return {
        "model": {"name": model.name, "hf_repo": model.hf_repo, "params": model.params,
                  "active_params": model.active_params, "layers": model.layers, "attention": model.attention_label,
                  "max_context": model.max_context, "native_dtype": model.native_dtype,
                  "kv_bytes_per_token": kv_bytes_per_token(model, request.kv_dtype) if not model.is_encoder else 0},
        "quant": request.quant.name,
        "kv_dtype": request.kv_dtype,
        "workload": asdict(request.workload),
        "pricing": request.pricing,
        "price_multiplier": request.multiplier,
        "hours_per_month": request.hours_per_month,
        "gpu_memory_utilization": request.gpu_memory_utilization,
        "budget_usd": request.budget_usd,
        "top": asdict(plan.top) if plan.top else None,
        "reasons": list(plan.reasons),
        "options": [{**asdict(option), "gpus_per_replica": option.gpus_per_replica} for option in plan.options],
        "sources": {
            "model": _sources(model.sources),
            "quant": _sources(request.quant.sources),
            "gpus": {name: _sources(gpu.sources) for name in sorted(gpus) if (gpu := find_gpu(name))},
            "instances": {name: _sources(inst.sources) for name in sorted(instances) if (inst := find_instance(name))},
        },
    }


def scenario_table(result: ScenarioResult) -> Table:
    scenario, work = result.scenario, result.scenario.workload
    table = Table(title=(f"scenario {scenario.name}: {scenario.use} · seed: {scenario.seed_size}, "
                         f"{scenario.seed_context} context · planned: {work.context_tokens:,} tokens x "
                         f"{work.concurrency} concurrent, {work.input_tokens:,} in / {work.output_tokens:,} out, "
                         f"{work.target_rpm or 0:g} req/min, TTFT <= {work.ttft_slo_s or 0:g} s, "
                         f"TPOT <= {(work.tpot_slo_s or 0) * 1e3:g} ms"), title_justify="left")
    for column in ("model", "quant", "pick", "GPUs", "TP", "replicas", "seqs/replica", "out tok/s", "TTFT s", "TPOT ms",
                   "$/month", "$/1M tok", "src"):
        table.add_column(column, justify="left" if column in ("model", "quant", "pick", "GPUs") else "right")
    for plan in result.plans:
        top = plan.top
        name = (plan.request.model.name, plan.request.quant.name)
        if top is None:
            table.add_row(*name, "[red]nothing fits[/]", *["-"] * 10)
            continue
        table.add_row(*name, f"{top.instances} x {top.instance}", f"{top.instances * top.gpus_per_instance}x {top.gpu_label}",
                      _parallel(top), str(top.replicas), f"{top.sequences_at_context:,}", f"{top.output_tokens_per_s:,.0f}",
                      f"{top.ttft_s:.2f}", f"{top.tpot_s * 1e3:.0f}", _usd(top.monthly_usd), _usd(top.usd_per_million_tokens, 3),
                      MARK_SYMBOL[top.mark])
    return table


def render_scenario(result: ScenarioResult, console: Console) -> None:
    console.print(scenario_table(result))
    console.print("\n[bold]against the seed's figure[/]")
    for line in result.gap:
        console.print(f"  {line}", highlight=False)
    best = result.best
    if best is not None:
        plan, top = best
        console.print(f"\n[bold]why {plan.request.model.name} on {top.instance}[/]")
        for reason in plan.reasons:
            console.print(f"  - {reason}", highlight=False)


def scenario_dict(result: ScenarioResult) -> dict[str, Any]:
    scenario = result.scenario
    best = result.best
    return {
        "scenario": scenario.name, "use": scenario.use,
        "seed": {"size": scenario.seed_size, "context": scenario.seed_context,
                 "infrastructure": scenario.seed_infrastructure, "instance": scenario.seed_instance,
                 "monthly_usd": list(scenario.seed_monthly_usd)},
        "workload": asdict(scenario.workload),
        "best": None if best is None else {"model": best[0].request.model.name, "option": asdict(best[1])},
        "gap": list(result.gap),
        "plans": [plan_dict(plan) for plan in result.plans],
    }


def render_local(machine: Machine, fits: list[LocalFit], larger: list[LargerFit], context_tokens: int,
                 console: Console) -> None:
    console.print(f"this machine: {machine.cpus} CPU cores, {machine.ram_total_bytes / GIB:.1f} GiB RAM "
                  f"({machine.ram_available_bytes / GIB:.1f} GiB available); context {context_tokens:,} tokens",
                  highlight=False)
    table = Table(title="models corral ships (CPU)", title_justify="left")
    for column in ("model", "engine", "weights", "KV at context", "RAM/replica", "threads", "replicas (RAM)",
                   "replicas (cores)", "measured"):
        table.add_column(column)
    for item in fits:
        table.add_row(item.name, item.engine, f"{item.weights_bytes / 1e6:,.0f} MB", f"{item.kv_bytes / 1e6:,.0f} MB",
                      f"{item.replica_bytes / 1e6:,.0f} MB", str(item.threads), str(item.replicas_by_ram),
                      str(item.replicas_by_cores), item.measured)
    console.print(table)
    console.print("  [dim]one thread per replica; replicas share the cores, so run fewer, with more threads, "
                  "for lower latency[/]")
    bigger = Table(title="larger models as GGUF Q4_K_M (llama.cpp)", title_justify="left")
    for column in ("model", "weights", "KV at context", "fits RAM", "~decode tok/s (2 threads)"):
        bigger.add_column(column)
    for large in larger:
        bigger.add_row(large.name, f"{large.weights_bytes / GIB:,.1f} GiB", f"{large.kv_bytes / GIB:,.2f} GiB",
                       "[green]yes[/]" if large.fits else "[red]no[/]", f"{large.decode_tokens_per_s:,.1f}")
    console.print(bigger)
    console.print("  [dim]decode speeds extrapolated from SmolLM2's measured bytes/s: an order of magnitude only[/]")


def local_dict(machine: Machine, fits: list[LocalFit], larger: list[LargerFit], context_tokens: int) -> dict[str, Any]:
    return {"machine": asdict(machine), "context_tokens": context_tokens,
            "shipped": [{**asdict(item), "replicas": item.replicas} for item in fits],
            "larger": [asdict(item) for item in larger]}
