"""From a model and a workload to ranked deployment options: for every instance, the
tensor-parallel degree, the replicas, whether it fits, how fast it is and what it costs.

    candidates   AWS instances (optionally of one GPU type) and bring-your-own boxes
    evaluate     one (instance, TP, nodes): memory budget -> sequences -> speed -> replicas -> $
    rank         fits, meets the SLOs, within budget, cheapest, fastest
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from corral.catalog.gpus import find_gpu
from corral.catalog.instances import INSTANCES, ON_PREM_SIZES, on_prem
from corral.catalog.records import (
    GIB,
    GpuSpec,
    Instance,
    Mark,
    ModelArch,
    QuantFormat,
    weakest_mark,
)
from corral.plan.cost import HOURS_PER_MONTH, PRICING, monthly_cost_usd, usd_per_million_tokens
from corral.plan.memory import (
    MemoryBudget,
    activation_peak_bytes,
    kv_bytes_per_sequence,
    max_concurrent_sequences,
    model_weight_bytes,
    runtime_overhead_bytes,
    tensor_parallel_options,
    vllm_batch_defaults,
    vllm_memory_budget,
)
from corral.plan.throughput import (
    DEFAULT_EFFICIENCY,
    Efficiency,
    ReplicaPerformance,
    replica_performance,
    replicas_for_throughput,
)


@dataclass(frozen=True)
class Workload:
    """What the deployment must hold and serve. ``concurrency`` sequences must fit at
    ``context_tokens`` each (the worst case); throughput is sized for the mean request."""

    context_tokens: int
    concurrency: int = 1
    input_tokens: int = 1024
    output_tokens: int = 256
    target_tpm: float | None = None
    target_rpm: float | None = None
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None

    def required_requests_per_s(self) -> float | None:
        """The larger of the RPM target and the TPM target over (input + output) tokens."""
        needs = []
        if self.target_rpm is not None:
            needs.append(self.target_rpm / 60)
        if self.target_tpm is not None:
            needs.append(self.target_tpm / (self.input_tokens + self.output_tokens) / 60)
        return max(needs) if needs else None


@dataclass(frozen=True)
class PlanRequest:
    model: ModelArch
    quant: QuantFormat
    workload: Workload
    kv_dtype: str = "auto"
    gpus: tuple[str, ...] = ()
    on_prem: bool = False
    gpu_hour_usd: float | None = None
    budget_usd: float | None = None
    pricing: str = "on-demand"
    price_multiplier: float | None = None
    hours_per_month: float = HOURS_PER_MONTH
    gpu_memory_utilization: float = 0.9
    efficiency: Efficiency = DEFAULT_EFFICIENCY

    @property
    def multiplier(self) -> float:
        return self.price_multiplier if self.price_multiplier is not None else PRICING[self.pricing]


@dataclass(frozen=True)
class Option:
    """One way to deploy the model, evaluated. Memory figures are per GPU of a replica."""

    instance: str
    provider: str
    gpu: str
    gpu_label: str
    interconnect: str
    gpus_per_instance: int
    tp: int
    pp: int
    replicas: int
    instances: int
    fits: bool
    why_not: str = ""
    weights_gib: float = 0.0
    kv_pool_gib: float = 0.0
    kv_gib_per_sequence: float = 0.0
    sequences_at_context: int = 0
    headroom_pct: float = 0.0
    batch: int = 0
    step_s: float = 0.0
    prefill_s: float = 0.0
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    output_tokens_per_s: float = 0.0
    total_tokens_per_s: float = 0.0
    requests_per_min: float = 0.0
    prefill_comm_share: float = 0.0
    meets_slo: bool = True
    usd_per_hour: float | None = None
    monthly_usd: float | None = None
    usd_per_million_tokens: float | None = None
    within_budget: bool | None = None
    mark: Mark = "verified"
    warnings: tuple[str, ...] = field(default=())

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    def rank_key(self) -> tuple[bool, bool, bool, bool, float, float]:
        """Fits, meets the SLOs, has a price, within budget, cheapest, fastest."""
        return (not self.fits, not self.meets_slo, self.monthly_usd is None, self.within_budget is False,
                self.monthly_usd or 0.0, -self.output_tokens_per_s)


def candidate_instances(request: PlanRequest) -> list[Instance]:
    """AWS instances (with ``--gpu``: of those GPU types), or bring-your-own boxes of
    1, 2, 4 and 8 GPUs with ``--on-prem``."""
    wanted = set(request.gpus)
    if request.on_prem:
        kinds = request.gpus or tuple(dict.fromkeys(instance.gpu for instance in INSTANCES))
        return [on_prem(gpu, count, request.gpu_hour_usd) for gpu in kinds for count in ON_PREM_SIZES]
    return [instance for instance in INSTANCES if not wanted or instance.gpu in wanted]


def _hourly(instance: Instance, request: PlanRequest) -> float | None:
    if instance.usd_per_hour is None:
        return None
    return instance.usd_per_hour * (1.0 if instance.provider == "on-prem" else request.multiplier)


def _warnings(request: PlanRequest, gpu: GpuSpec, tp: int, pp: int, perf: ReplicaPerformance | None,
              instance: Instance) -> tuple[str, ...]:
    model, notes = request.model, []
    if tp > 1 and gpu.interconnect == "pcie":
        share = f" (about {perf.prefill_comm_share:.0%} of prefill time)" if perf else ""
        notes.append(f"TP={tp} over PCIe: {gpu.label} has no NVLink, so every layer's all-reduce crosses "
                     f"PCIe{share}; more GPUs may not mean more speed (the seed's L40S trap)")
    if request.quant.compute == "fp8" and gpu.fp8_flops is None:
        notes.append(f"{gpu.label} has no fp8 tensor cores: vLLM runs fp8 weight-only (Marlin), computing in bf16")
    if any(group.kind != "mla" and group.kv_heads < tp for group in model.attention):
        notes.append(f"{model.attention[0].kv_heads} KV heads < TP={tp}: vLLM replicates KV heads, "
                     "so KV per GPU stops shrinking")
    if tp > 1 and any(group.kind == "mla" for group in model.attention):
        notes.append(f"MLA: each of the {tp} TP ranks keeps the whole latent KV cache")
    if pp > 1:
        notes.append(f"one replica spans {pp} instances (pipeline parallel {pp}): needs a fast network "
                     "(EFA) and vLLM's multi-node setup (Ray)")
    if instance.usd_per_hour is None:
        notes.append(instance.notes or f"{instance.name}: no price (give --gpu-hour-usd for on-prem boxes)")
    return tuple(notes)


def evaluate(request: PlanRequest, instance: Instance, gpu: GpuSpec, tp: int, nodes: int = 1) -> Option:
    """Size one (instance, TP, nodes) choice: does one sequence of the context fit, how many
    do, how fast is a replica, how many replicas and instances, what it costs."""
    model, quant, work = request.model, request.quant, request.workload
    pp = nodes
    batched, max_seqs = vllm_batch_defaults(gpu)
    weights = model_weight_bytes(model, quant)
    budget = vllm_memory_budget(gpu.memory_bytes, request.gpu_memory_utilization, math.ceil(weights / (tp * pp)),
                                activation_peak_bytes(model, batched), runtime_overhead_bytes(gpu.memory_bytes, tp))

    def kv_per_gpu(tokens: int) -> int:
        return math.ceil(kv_bytes_per_sequence(model, tokens, kv_dtype=request.kv_dtype, tp=tp,
                                               max_num_batched_tokens=batched) / pp)

    kv_context = kv_per_gpu(work.context_tokens)
    at_context = max_concurrent_sequences(budget.kv_pool, kv_context, max_seqs)
    base = Option(
        instance=instance.name, provider=instance.provider, gpu=gpu.name, gpu_label=gpu.label,
        interconnect=gpu.interconnect, gpus_per_instance=instance.gpu_count, tp=tp, pp=pp, replicas=0, instances=0,
        fits=False, weights_gib=budget.weights / GIB, kv_pool_gib=max(budget.kv_pool, 0) / GIB,
        kv_gib_per_sequence=kv_context / GIB, sequences_at_context=at_context, usd_per_hour=_hourly(instance, request),
        mark=weakest_mark((*model.sources, *gpu.sources, *instance.sources, *quant.sources)),
    )
    if at_context < 1:
        return replace(base, why_not=_why_not(budget, kv_context, work.context_tokens),
                       warnings=_warnings(request, gpu, tp, pp, None, instance))
    max_batch = max_concurrent_sequences(budget.kv_pool, kv_per_gpu(work.input_tokens + work.output_tokens), max_seqs)
    perf = replica_performance(model, quant, weights, gpu, tp, max_batch=max_batch, input_tokens=work.input_tokens,
                               output_tokens=work.output_tokens, kv_dtype=request.kv_dtype,
                               tpot_slo_s=work.tpot_slo_s, eff=request.efficiency)
    return _sized(request, instance, gpu, base, budget, perf)


def _why_not(budget: MemoryBudget, kv_context: int, context_tokens: int) -> str:
    runtime = budget.activation + budget.overhead
    if budget.weights + runtime >= budget.usable:
        return (f"weights {budget.weights / GIB:.1f} GiB + runtime {runtime / GIB:.1f} GiB exceed "
                f"{budget.usable / GIB:.1f} GiB usable per GPU")
    return (f"KV for one {context_tokens:,}-token sequence ({kv_context / GIB:.1f} GiB) exceeds the "
            f"{budget.kv_pool / GIB:.1f} GiB left per GPU")


def replicas_needed(work: Workload, perf: ReplicaPerformance, sequences_at_context: int) -> int:
    """Replicas = max(1, concurrency / sequences per replica, required rate / replica rate), rounded up."""
    required = work.required_requests_per_s()
    return max(1, math.ceil(work.concurrency / sequences_at_context),
               replicas_for_throughput(required, perf.requests_per_s) if required else 1)


def _sized(request: PlanRequest, instance: Instance, gpu: GpuSpec, base: Option, budget: MemoryBudget,
           perf: ReplicaPerformance) -> Option:
    """Replicas, instances (a whole instance's GPUs become replicas), headroom, SLOs and money."""
    work = request.workload
    needed = replicas_needed(work, perf, base.sequences_at_context)
    if base.pp == 1:
        per_instance = instance.gpu_count // base.tp
        instances = math.ceil(needed / per_instance)
        replicas = instances * per_instance
    else:
        replicas, instances = needed, needed * base.pp
    kv_in_use = math.ceil(work.concurrency / replicas) * base.kv_gib_per_sequence * GIB
    in_use = budget.weights + budget.activation + budget.overhead + kv_in_use
    hourly = base.usd_per_hour
    monthly = None if hourly is None else monthly_cost_usd(hourly, instances, hours=request.hours_per_month)
    required = work.required_requests_per_s()
    load_tokens_s = (required * (work.input_tokens + work.output_tokens) if required
                     else replicas * perf.total_tokens_per_s)
    meets = ((work.ttft_slo_s is None or perf.ttft_s <= work.ttft_slo_s)
             and (work.tpot_slo_s is None or perf.tpot_s <= work.tpot_slo_s))
    return replace(
        base, replicas=replicas, instances=instances, fits=True,
        headroom_pct=100 * (budget.usable - in_use) / budget.usable, batch=perf.batch,
        step_s=perf.step_s, prefill_s=perf.prefill_s, ttft_s=perf.ttft_s, tpot_s=perf.tpot_s,
        output_tokens_per_s=replicas * perf.output_tokens_per_s, total_tokens_per_s=replicas * perf.total_tokens_per_s,
        requests_per_min=replicas * perf.requests_per_s * 60, prefill_comm_share=perf.prefill_comm_share,
        meets_slo=meets, monthly_usd=monthly,
        usd_per_million_tokens=None if monthly is None else usd_per_million_tokens(
            monthly, load_tokens_s, hours=request.hours_per_month),
        within_budget=None if monthly is None or request.budget_usd is None else monthly <= request.budget_usd,
        warnings=_warnings(request, gpu, base.tp, base.pp, perf, instance),
    )


def best_option(request: PlanRequest, instance: Instance) -> Option | None:
    """The best TP for this instance; two instances with pipeline parallelism when a
    model does not fit one 8-GPU instance."""
    gpu = find_gpu(instance.gpu)
    if gpu is None:
        return None
    options = [evaluate(request, instance, gpu, tp) for tp in tensor_parallel_options(request.model, instance.gpu_count)]
    if not any(option.fits for option in options) and instance.gpu_count == 8 and options:
        options.append(evaluate(request, instance, gpu, max(option.tp for option in options), nodes=2))
    return min(options, key=lambda option: (*option.rank_key(), -option.tp if not option.fits else option.tp),
               default=None)


def rank(options: list[Option]) -> list[Option]:
    """Best first; drop a priced AWS option when a cheaper one with the same GPUs fits as well
    (g6e.2xlarge and g6e.4xlarge: one L40S like g6e.xlarge, with more vCPUs and RAM)."""
    kept: list[Option] = []
    for option in sorted(options, key=Option.rank_key):
        dominated = option.provider == "aws" and option.usd_per_hour is not None and any(
            k.provider == "aws" and k.gpu == option.gpu and k.gpus_per_instance == option.gpus_per_instance
            and k.fits == option.fits and k.usd_per_hour is not None for k in kept)
        if not dominated:
            kept.append(option)
    return kept


def plan_options(request: PlanRequest) -> list[Option]:
    """Every candidate instance, evaluated at its best TP, ranked."""
    options = [best_option(request, instance) for instance in candidate_instances(request)]
    return rank([option for option in options if option is not None])
