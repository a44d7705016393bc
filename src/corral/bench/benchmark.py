"""One benchmark end to end: check, warm up, run (each sweep level), parse, count, measure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from corral.bench.records import Exchange, RequestResult, parse_exchange
from corral.bench.runner import LoadSpec, Runner, RunState, StreamClient, Target, new_session
from corral.bench.stats import DEFAULT_PERCENTILES, Metrics, Slo, compute_metrics
from corral.bench.sweep import SweepSpec, keep_up_ratio, saturation
from corral.bench.tokens import TokenCounter, detect_counter
from corral.bench.workload import Workload, WorkloadSpec, build_workload, warmup_spec
from corral.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BenchSettings:
    target: Target
    workload: WorkloadSpec
    load: LoadSpec = field(default_factory=LoadSpec)
    warmup: int = 0
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    slo: Slo | None = None
    tokenize: str = "auto"
    sweep: SweepSpec | None = None


@dataclass(slots=True)
class LevelResult:
    """One run (one sweep level): its settings, per-request results and metrics."""

    label: str
    load: LoadSpec
    dataset: str
    counter: str
    results: list[RequestResult]
    metrics: Metrics
    arrivals: int
    #: Completion rate / offered rate (sweep.keep_up_ratio); None for multi-round workloads.
    keep_up: float | None = None
    saturated: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


class Observer(Protocol):
    def level_started(self, label: str, state: RunState) -> None: ...

    def level_finished(self, level: LevelResult) -> None: ...


class _Quiet:
    def level_started(self, label: str, state: RunState) -> None:
        pass

    def level_finished(self, level: LevelResult) -> None:
        pass


def split_base_url(base_url: str) -> tuple[str, str]:
    """(server root for /tokenize, OpenAI API root): ``http://h:8000`` and ``http://h:8000/v1``
    both give (``http://h:8000``, ``http://h:8000/v1``)."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        return base[: -len("/v1")], base
    return base, base + "/v1"


async def run_benchmark(settings: BenchSettings, observer: Observer | None = None) -> list[LevelResult]:
    observer = observer or _Quiet()
    target = settings.target
    root, _ = split_base_url(target.api_url)
    async with new_session(None, target.timeout_s) as session:
        try:
            counter = await detect_counter(session, root, target.model, settings.tokenize)
        except ValueError as exc:
            raise ConfigError(f"--tokenize server: {exc}") from None
        client = StreamClient(session, target)
        await _check(client, target, settings, counter)
        levels: list[LevelResult] = []
        best: float | None = None
        for i, (label, load) in enumerate(_levels(settings)):
            spec = replace(settings.workload, seed=settings.workload.seed + i)
            level = await _run_level(client, target, settings, spec, load, label, counter, observer)
            if settings.sweep is not None:
                level.saturated = saturation(settings.sweep, level.metrics, level.keep_up, best)
                best = max(best or 0.0, level.metrics.output_throughput)
            levels.append(level)
            observer.level_finished(level)
            if level.saturated:
                break
        return levels


def _levels(settings: BenchSettings) -> list[tuple[str, LoadSpec]]:
    sweep = settings.sweep
    if sweep is None:
        return [("", settings.load)]
    if sweep.kind == "rate":
        return [(f"rate={v:g}", replace(settings.load, request_rate=v)) for v in sweep.levels]
    return [(f"concurrency={int(v)}", replace(settings.load, max_concurrency=int(v))) for v in sweep.levels]


async def _check(client: StreamClient, target: Target, settings: BenchSettings, counter: TokenCounter) -> None:
    """One request before anything is measured, so a wrong URL or model fails clearly."""
    workload = await build_workload(warmup_spec(settings.workload, 1), counter)
    state = RunState()
    output = await Runner(client, target, LoadSpec(), state).run(workload.conversations)
    result = parse_exchange(output.exchanges[0])
    if not result.success:
        raise ConfigError(
            f"--base-url/--model: the check request to {target.url} failed "
            f"({result.error}: {result.error_detail})"
        )


async def _run_level(
    client: StreamClient,
    target: Target,
    settings: BenchSettings,
    spec: WorkloadSpec,
    load: LoadSpec,
    label: str,
    counter: TokenCounter,
    observer: Observer,
) -> LevelResult:
    workload = await build_workload(spec, counter)
    if settings.warmup:
        warm = await build_workload(warmup_spec(spec, settings.warmup), counter)
        cap = min(settings.warmup, load.max_concurrency or settings.warmup)
        await Runner(client, target, LoadSpec(max_concurrency=cap)).run(warm.conversations)
    state = RunState()
    observer.level_started(label, state)
    output = await Runner(client, target, load, state).run(workload.conversations)
    exchanges = sorted(output.exchanges, key=lambda ex: ex.start_s)
    results = await count_missing([parse_exchange(ex) for ex in exchanges], exchanges, counter)
    metrics = compute_metrics(results, output.duration_s, settings.percentiles, settings.slo)
    # The keep-up ratio needs an offered rate, and requests released by arrivals (single turn).
    open_loop = not math.isinf(load.request_rate) and all(len(c.turns) == 1 for c in workload.conversations)
    return LevelResult(
        label=label,
        load=load,
        dataset=workload.dataset,
        counter=counter.name,
        results=results,
        metrics=metrics,
        arrivals=len(output.arrivals_s),
        keep_up=keep_up_ratio(results, output.arrivals_s) if open_loop else None,
        extra={"offered_request_rate": _offered_rate(output.arrivals_s, load), "workload": _shape(workload)},
    )


async def count_missing(
    results: list[RequestResult], exchanges: Sequence[Exchange], counter: TokenCounter
) -> list[RequestResult]:
    """After the run: prompt tokens that neither the workload nor usage gave are counted;
    output tokens without usage are counted by the server's /tokenize when it has one."""
    prompts = [i for i, r in enumerate(results) if r.success and r.prompt_tokens is None and exchanges[i].prompt_text is not None]
    outputs = [i for i, r in enumerate(results) if r.success and r.output_tokens_source == "chunks"]
    if prompts:
        counts = await counter.count([exchanges[i].prompt_text or "" for i in prompts])
        for i, n in zip(prompts, counts, strict=True):
            results[i] = replace(results[i], prompt_tokens=n)
    if outputs and counter.name == "server":
        counts = await counter.count([results[i].text for i in outputs])
        for i, n in zip(outputs, counts, strict=True):
            results[i] = replace(results[i], output_tokens=n, output_tokens_source="tokenize")
    return results


def _offered_rate(arrivals: Sequence[float], load: LoadSpec) -> float | None:
    if math.isinf(load.request_rate) or len(arrivals) < 2:
        return None
    span = max(arrivals) - min(arrivals)
    return (len(arrivals) - 1) / span if span > 0 else None


def _shape(workload: Workload) -> dict[str, int]:
    return {"conversations": len(workload.conversations), "requests": workload.num_requests}
