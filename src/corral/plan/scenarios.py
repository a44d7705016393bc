"""The seed guide's three scenarios, planned, and compared with the guide's own figures.

The guide ("Self-Hosting AI Models", Infinum, 2026-04-16; shared/reference/seed.md) gives
rough on-demand monthly costs for one environment: small ~$400-600 (a single G6e
instance), medium ~$3k-8k (multi-GPU), large ~$30k+ (p5e.48xlarge, 8x H200). Each
scenario here fixes a workload inside the guide's ranges, plans every model the guide
names, and explains the gap between the cheapest fitting plan and the guide's figure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corral.catalog.instances import INSTANCES, find_instance
from corral.catalog.models import find_model
from corral.catalog.quant import find_quant
from corral.plan.advice import Plan, make_plan
from corral.plan.cost import (
    HOURS_PER_MONTH,
    PRICING,
    hours_within,
    monthly_cost_usd,
    multiplier_within,
)
from corral.plan.recommend import Option, PlanRequest, Workload, best_option


@dataclass(frozen=True)
class Scenario:
    name: str
    use: str
    seed_size: str
    seed_context: str
    seed_infrastructure: str
    seed_instance: str
    seed_monthly_usd: tuple[float, float | None]
    models: tuple[tuple[str, str | None], ...]
    workload: Workload


SCENARIOS: dict[str, Scenario] = {
    "small": Scenario(
        name="small", use="chatbot, customer support, simple Q&A", seed_size="7-8B", seed_context="2k-20k",
        seed_infrastructure="a single G6e instance", seed_instance="g6e.xlarge", seed_monthly_usd=(400, 600),
        models=(("llama-3.1-8b", None), ("mistral-7b-v0.3", None), ("qwen2.5-7b", None), ("llama-3.1-8b", "fp8")),
        workload=Workload(context_tokens=16384, concurrency=8, input_tokens=1500, output_tokens=300,
                          target_rpm=30, ttft_slo_s=2.0, tpot_slo_s=0.1),
    ),
    "medium": Scenario(
        name="medium", use="reasoning over a knowledge base (RAG, strict instructions)", seed_size="~70B",
        seed_context="20k-50k", seed_infrastructure="multi-GPU", seed_instance="g6e.12xlarge",
        seed_monthly_usd=(3000, 8000),
        models=(("llama-3.1-70b", "fp8"), ("mixtral-8x7b", "fp8"), ("qwen2.5-72b", "fp8"), ("gpt-oss-20b", None)),
        workload=Workload(context_tokens=32768, concurrency=8, input_tokens=8000, output_tokens=500,
                          target_rpm=10, ttft_slo_s=5.0, tpot_slo_s=0.1),
    ),
    "large": Scenario(
        name="large", use="code refactoring, massive document analysis, agents", seed_size="100B+",
        seed_context="50k+", seed_infrastructure="p5e.48xlarge (8x H200)", seed_instance="p5e.48xlarge",
        seed_monthly_usd=(30000, None),
        models=(("gpt-oss-120b", None), ("deepseek-r1", None), ("mistral-large-3", None)),
        workload=Workload(context_tokens=65536, concurrency=8, input_tokens=32000, output_tokens=2000,
                          target_rpm=4, ttft_slo_s=30.0, tpot_slo_s=0.1),
    ),
}


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    plans: tuple[Plan, ...]
    gap: tuple[str, ...]

    @property
    def best(self) -> tuple[Plan, Option] | None:
        """The cheapest fitting, SLO-meeting top pick across the scenario's models."""
        picks = [(plan, plan.top) for plan in self.plans if plan.top is not None and plan.top.monthly_usd is not None]
        picks = [(plan, top) for plan, top in picks if top.meets_slo] or picks
        return min(picks, key=lambda pick: pick[1].monthly_usd or 0.0, default=None)


def scenario_request(scenario: Scenario, model: str, quant: str | None, **overrides: object) -> PlanRequest:
    arch = find_model(model)
    assert arch is not None, model
    fmt = find_quant(quant or arch.native_dtype)
    assert fmt is not None, quant
    request = PlanRequest(model=arch, quant=fmt, workload=scenario.workload)
    return replace(request, **overrides)  # type: ignore[arg-type]


def run_scenario(name: str, **overrides: object) -> ScenarioResult:
    """Plan every model of the scenario; ``overrides`` are PlanRequest fields (pricing, ...)."""
    scenario = SCENARIOS[name]
    plans = tuple(make_plan(scenario_request(scenario, model, quant, **overrides)) for model, quant in scenario.models)
    result = ScenarioResult(scenario, plans, ())
    return replace(result, gap=tuple(explain_gap(result)))


def _usd(value: float) -> str:
    return f"${value:,.0f}"


def _seed_range(scenario: Scenario) -> str:
    low, high = scenario.seed_monthly_usd
    return f"~{_usd(low)}-{_usd(high)}" if high is not None else f"~{_usd(low)}+"


def _versus_seed(monthly: float, scenario: Scenario) -> str:
    low, high = scenario.seed_monthly_usd
    if monthly < low:
        return "below the seed's range" if high is not None else "below the seed's floor"
    if high is None or monthly <= high:
        return "within the seed's range" if high is not None else "consistent with the seed's floor"
    return f"{monthly / high:.1f}x the seed's upper figure"


def _model_line(plan: Plan, scenario: Scenario) -> str:
    name = f"{plan.request.model.name} ({plan.request.quant.name})"
    top = plan.top
    if top is None:
        return f"  {name}: nothing fits"
    if top.monthly_usd is None:
        return f"  {name}: {top.instances} x {top.instance}, no on-demand price"
    return (f"  {name}: {top.instances} x {top.instance} ({top.gpu_label}, TP={top.tp}"
            + (f", PP={top.pp}" if top.pp > 1 else "") + f") = {_usd(top.monthly_usd)}/month, "
            + _versus_seed(top.monthly_usd, scenario))


def _one_instance_lines(result: ScenarioResult, limit_usd: float) -> list[str]:
    """What the best single instance within the seed's figure serves of the workload."""
    work = result.scenario.workload
    picks: list[tuple[Plan, Option]] = []
    for plan in result.plans:
        relaxed = replace(plan.request, workload=replace(work, concurrency=1, target_rpm=None, target_tpm=None))
        for instance in INSTANCES:
            if instance.usd_per_hour is not None and monthly_cost_usd(instance.usd_per_hour, 1) <= limit_usd:
                option = best_option(relaxed, instance)
                if option is not None and option.fits and option.instances == 1:
                    picks.append((plan, option))
    if not picks:
        return [f"  instance: no single instance at or under {_usd(limit_usd)}/month fits these models at "
                f"{work.context_tokens:,} tokens"]
    plan, option = max(picks, key=lambda pick: (pick[1].sequences_at_context * pick[1].replicas,
                                                pick[1].requests_per_min))
    asked = f" of the {work.target_rpm:g} asked" if work.target_rpm else ""
    return [f"  instance: within {_usd(limit_usd)}, 1 x {option.instance} ({option.gpu_label}, "
            f"{_usd(option.monthly_usd or 0.0)}/month) with {plan.request.model.name} ({plan.request.quant.name}) "
            f"holds {option.sequences_at_context * option.replicas} of the {work.concurrency} {work.context_tokens:,}-token "
            f"sequences and serves ~{option.requests_per_min:,.0f} requests/min{asked}"]


def _seed_lines(scenario: Scenario) -> list[str]:
    lines = [f"seed: {scenario.seed_infrastructure}, {_seed_range(scenario)}/month "
             "(the guide's rough on-demand estimate for one environment)"]
    seed = find_instance(scenario.seed_instance)
    if seed is not None and seed.usd_per_hour is not None:
        lines.append(f"the seed's {seed.name} on demand: ${seed.usd_per_hour:,.4g}/h x {HOURS_PER_MONTH:g} h = "
                     f"{_usd(monthly_cost_usd(seed.usd_per_hour, 1))}/month")
    elif seed is not None:
        lines.append(f"the seed's {seed.name} has no on-demand price ({seed.notes})")
    return lines


def _below_line(result: ScenarioResult, plan: Plan, monthly: float) -> str:
    low = result.scenario.seed_monthly_usd[0]
    priced = [(p.top.monthly_usd, p) for p in result.plans if p.top is not None and p.top.monthly_usd is not None]
    cost, priciest = max(priced, key=lambda pick: pick[0])
    return (f"{_usd(low - monthly)} below the seed's figure: {plan.request.model.name} needs less than the "
            f"scenario's largest model; the seed's figure matches {priciest.request.model.name} "
            f"({_usd(cost)}/month here)")


def _above_lines(result: ScenarioResult, top: Option, limit: float) -> list[str]:
    """Three ways to land at the seed's figure: fewer hours, a discount, a smaller instance."""
    monthly = top.monthly_usd or 0.0
    assert top.usd_per_hour is not None
    hours = hours_within(limit, top.usd_per_hour, top.instances)
    discounted = ", ".join(f"{name} {_usd(monthly * PRICING[name])}" for name in ("reserved-1y", "reserved-3y", "spot"))
    lines = [f"{_usd(monthly - limit)} ({monthly / limit - 1:.0%}) above the seed's {_usd(limit)}; "
             "the seed's figure needs one of:",
             f"  hours: {hours:,.0f} h/month instead of {HOURS_PER_MONTH:g} (e.g. 12 h x 22 working days = 264 h)",
             f"  pricing: {1 - multiplier_within(limit, monthly):.0%} off on-demand (assumed multipliers: {discounted})"]
    smaller = [(p, o) for p in result.plans for o in p.options
               if o.fits and o.meets_slo and o.monthly_usd is not None and o.monthly_usd <= limit]
    if not smaller:
        return lines + _one_instance_lines(result, limit)
    plan, option = min(smaller, key=lambda pick: pick[1].monthly_usd or 0.0)
    return [*lines, f"  instance: {plan.request.model.name} ({plan.request.quant.name}) on {option.instances} x "
                    f"{option.instance} ({option.gpu_label}) at {_usd(option.monthly_usd or 0.0)}/month meets this workload"]


def _seed_gpus_line(result: ScenarioResult) -> list[str]:
    """When the seed's instance has no on-demand price: the same GPUs on demand, for its largest model."""
    scenario = result.scenario
    seed = find_instance(scenario.seed_instance)
    if seed is None or seed.usd_per_hour is not None:
        return []
    largest = max(result.plans, key=lambda p: p.request.model.params)
    same = [o for o in largest.options if o.gpu == seed.gpu and o.fits and o.monthly_usd]
    if not same:
        return []
    on_demand, reserved = same[0].monthly_usd or 0.0, PRICING["reserved-1y"]
    return [f"the seed's {seed.gpu_count}x {same[0].gpu_label} on demand: {largest.request.model.name} on "
            f"{same[0].instances} x {same[0].instance} = {_usd(on_demand)}/month; with a 1-year reservation "
            f"(x{reserved}) {_usd(on_demand * reserved)}, close to the seed's {_seed_range(scenario)}"]


def explain_gap(result: ScenarioResult) -> list[str]:
    """Our cheapest plan against the seed's monthly figure, and what closes the gap:
    hours per month, reserved/spot pricing, or the instance size."""
    scenario, best = result.scenario, result.best
    low, high = scenario.seed_monthly_usd
    lines = _seed_lines(scenario) + [_model_line(plan, scenario) for plan in result.plans]
    if best is None:
        return [*lines, "no model of this scenario fits any priced instance"]
    plan, top = best
    monthly = top.monthly_usd or 0.0
    lines.append(f"ours: {plan.request.model.name} ({plan.request.quant.name}) on {top.instances} x {top.instance} "
                 f"({top.gpu_label}, TP={top.tp}), {top.replicas} replica(s) = {_usd(monthly)}/month on demand at "
                 f"{HOURS_PER_MONTH:g} h")
    if monthly < low:
        lines.append(_below_line(result, plan, monthly))
    elif high is None:
        lines.append(f"consistent with the seed's '{_seed_range(scenario)}': the seed's figure is a floor")
    elif monthly <= high:
        lines.append("within the seed's range")
    else:
        lines.extend(_above_lines(result, top, high))
    return lines + _seed_gpus_line(result)
