"""Results as text and JSON: the `vllm bench serve` summary table, a sweep table, the JSON
result (vLLM's field names plus ours). Returns strings and dicts; the CLI prints them."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from rich.table import Table

from corral import __version__
from corral.bench.benchmark import BenchSettings, LevelResult
from corral.bench.records import RequestResult
from corral.bench.stats import DISTRIBUTIONS, Distribution, Metrics

#: Section titles of the table, as vLLM prints them (TTST and queueing are ours).
SECTIONS: dict[str, tuple[str, str]] = {
    "ttft": ("Time to First Token", "TTFT"),
    "tpot": ("Time per Output Token (excl. 1st token)", "TPOT"),
    "itl": ("Inter-token Latency", "ITL"),
    "e2el": ("End-to-end Latency", "E2EL"),
    "ttst": ("Time to Second Token", "TTST"),
}


def p_word(p: float) -> str:
    """vLLM's percentile key: 99 -> "99", 99.9 -> "99.9"."""
    return str(int(p)) if int(p) == p else str(p)


def _line(label: str, value: object) -> str:
    if isinstance(value, float):
        return f"{label:<40} {value:<10.2f}"
    return f"{label:<40} {value!s:<10}"


def summary_table(level: LevelResult, percentiles: tuple[float, ...]) -> str:
    """The summary in the layout of `vllm bench serve`."""
    m, load = level.metrics, level.load
    title = " Serving Benchmark Result " + (f"({level.label}) " if level.label else "")
    lines = [f"{title:=^50}"]
    lines += [_line("Successful requests:", m.completed), _line("Failed requests:", m.failed)]
    if load.max_concurrency is not None:
        lines.append(_line("Maximum request concurrency:", load.max_concurrency))
    if not math.isinf(load.request_rate):
        lines.append(_line("Request rate configured (RPS):", float(load.request_rate)))
    lines += [
        _line("Benchmark duration (s):", m.duration_s),
        _line("Total input tokens:", m.total_input_tokens),
        _line("Total generated tokens:", m.total_output_tokens),
        _line("Request throughput (req/s):", m.request_throughput),
    ]
    if m.request_goodput is not None:
        lines.append(_line("Request goodput (req/s):", m.request_goodput))
    lines += [
        _line("Output token throughput (tok/s):", m.output_throughput),
        _line("Peak output token throughput (tok/s):", m.max_output_tokens_per_s),
        _line("Peak concurrent requests:", float(m.max_concurrent_requests)),
        _line("Total token throughput (tok/s):", m.total_token_throughput),
    ]
    for key, (section, short) in SECTIONS.items():
        lines += _section(section, short, m.distributions.get(key), percentiles)
    if m.errors_by_kind:
        lines.append(f"{'Errors':-^50}")
        lines += [_line(f"{kind}:", n) for kind, n in sorted(m.errors_by_kind.items())]
    lines.append("=" * 50)
    return "\n".join(lines)


def _section(title: str, short: str, dist: Distribution | None, percentiles: tuple[float, ...]) -> list[str]:
    lines = [f"{title:-^50}"]
    if dist is None:
        return [*lines, _line(f"Mean {short} (ms):", "n/a")]
    lines += [_line(f"Mean {short} (ms):", dist.mean_ms), _line(f"Median {short} (ms):", dist.median_ms)]
    lines += [
        _line(f"P{p_word(p)} {short} (ms):", dist.percentiles_ms[p])
        for p in percentiles
        if p in dist.percentiles_ms
    ]
    return lines


def sweep_table(levels: list[LevelResult]) -> Table:
    """One row per level: the latency-throughput curve as numbers (latencies in ms)."""
    table = Table(title="sweep (latencies in ms)")
    columns = ("level", "req/s", "out tok/s", "TTFT mean", "TTFT p99", "TPOT mean", "ITL p99",
               "failed", "keep-up", "saturated")
    for column in columns:
        table.add_column(column, justify="left" if column in ("level", "saturated") else "right")
    for level in levels:
        m, d = level.metrics, level.metrics.distributions
        table.add_row(
            level.label,
            f"{m.request_throughput:.2f}",
            f"{m.output_throughput:.1f}",
            _ms(d.get("ttft"), "mean"),
            _ms(d.get("ttft"), 99.0),
            _ms(d.get("tpot"), "mean"),
            _ms(d.get("itl"), 99.0),
            str(m.failed),
            "-" if level.keep_up is None else f"{level.keep_up:.0%}",
            (level.saturated or "").split(":", 1)[0],
        )
    saturated = next((lv for lv in levels if lv.saturated), None)
    table.caption = (
        f"saturated at {saturated.label}: {saturated.saturated}" if saturated else "not saturated"
    )
    return table


def _ms(dist: Distribution | None, which: str | float) -> str:
    if dist is None:
        return "-"
    if which == "mean":
        return f"{dist.mean_ms:.1f}"
    value = dist.percentiles_ms.get(float(which))
    return "-" if value is None else f"{value:.1f}"


def level_json(level: LevelResult, settings: BenchSettings, *, detailed: bool = False) -> dict[str, Any]:
    """A result under vLLM's field names, then ours; per-request lists with ``detailed``."""
    m, load, target = level.metrics, level.load, settings.target
    out: dict[str, Any] = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "backend": "openai-chat" if target.endpoint == "chat" else "openai",
        "model_id": target.model,
        "num_prompts": len(level.results),
        "request_rate": "inf" if math.isinf(load.request_rate) else load.request_rate,
        "burstiness": load.burstiness,
        "max_concurrency": load.max_concurrency,
        **_vllm_metrics(m, settings.percentiles),
        # ours
        "label": level.label,
        "base_url": target.api_url,
        "url": target.url,
        "dataset": level.dataset,
        "seed": settings.workload.seed,
        "num_warmups": settings.warmup,
        "duration_limit_s": load.duration_s,
        "token_counting": level.counter,
        "percentiles": list(settings.percentiles),
        "goodput_slo_ms": settings.slo.as_dict() if settings.slo else None,
        "errors_by_kind": m.errors_by_kind,
        "output_tokens_source": m.output_tokens_sources,
        "max_concurrent_requests_per_second_bucket": m.max_concurrent_requests_per_second,
        "offered_request_rate": level.extra.get("offered_request_rate"),
        "keep_up_ratio": level.keep_up,
        "saturated": level.saturated,
        "workload": level.extra.get("workload"),
        "corral_version": __version__,
    }
    if detailed:
        out |= _detailed(level.results)
    return out


def _vllm_metrics(m: Metrics, percentiles: tuple[float, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "duration": m.duration_s,
        "completed": m.completed,
        "failed": m.failed,
        "total_input_tokens": m.total_input_tokens,
        "total_output_tokens": m.total_output_tokens,
        "request_throughput": m.request_throughput,
        "request_goodput": m.request_goodput,
        "output_throughput": m.output_throughput,
        "total_token_throughput": m.total_token_throughput,
        "max_output_tokens_per_s": m.max_output_tokens_per_s,
        "max_concurrent_requests": m.max_concurrent_requests,
    }
    for name in DISTRIBUTIONS:
        dist = m.distributions.get(name)
        out[f"mean_{name}_ms"] = dist.mean_ms if dist else None
        out[f"median_{name}_ms"] = dist.median_ms if dist else None
        out[f"std_{name}_ms"] = dist.std_ms if dist else None
        for p in percentiles:
            out[f"p{p_word(p)}_{name}_ms"] = dist.percentiles_ms.get(p) if dist else None
    return out


def _detailed(results: list[RequestResult]) -> dict[str, Any]:
    """vLLM's per-request lists (seconds) and our per-request records."""
    origin = min((r.scheduled_s for r in results), default=0.0)
    return {
        "input_lens": [r.prompt_tokens for r in results],
        "output_lens": [r.output_tokens if r.success else 0 for r in results],
        "ttfts": [r.ttft_s if r.success else 0.0 for r in results],
        "itls": [r.itl_s if r.success else [] for r in results],
        "generated_texts": [r.text for r in results],
        "errors": [r.error_detail or r.error or "" for r in results],
        "requests": [_record(r, origin) for r in results],
    }


def _record(r: RequestResult, origin: float) -> dict[str, Any]:
    return {
        "conversation": r.conversation,
        "round": r.round,
        "success": r.success,
        "error": r.error,
        "scheduled_s": r.scheduled_s - origin,
        "start_s": r.start_s - origin,
        "chunk_times_s": [t - origin for t in r.chunk_times_s],
        "ttft_s": r.ttft_s,
        "e2el_s": r.latency_s,
        "prompt_tokens": r.prompt_tokens,
        "usage_prompt_tokens": r.usage_prompt_tokens,
        "output_tokens": r.output_tokens,
        "output_tokens_source": r.output_tokens_source,
        "requested_output_tokens": r.requested_output_len,
    }


def sweep_json(levels: list[LevelResult], settings: BenchSettings, *, detailed: bool = False) -> dict[str, Any]:
    sweep = settings.sweep
    if sweep is None:
        raise ValueError("sweep_json needs settings.sweep")
    saturated = next((lv for lv in levels if lv.saturated), None)
    return {
        "sweep": {
            "kind": sweep.kind,
            "levels": list(sweep.levels),
            "run": [lv.label for lv in levels],
            "keep_up": sweep.keep_up,
            "min_gain": sweep.min_gain,
            "saturated_at": saturated.label if saturated else None,
            "reason": saturated.saturated if saturated else None,
        },
        "results": [level_json(lv, settings, detailed=detailed) for lv in levels],
    }
