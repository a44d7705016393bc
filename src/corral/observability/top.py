"""`corral top`: a live view of a running stack, computed from the router's /metrics.

Two scrapes a few seconds apart give rates (requests/s, tokens/s) and windowed
quantiles (TTFT p50/p99 from the histogram buckets' increase), per model and endpoint.
The computations are pure functions over parsed samples, tested without a network.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table
from rich.text import Text

#: (metric sample name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _select(samples: Samples, name: str) -> Iterable[tuple[dict[str, str], float]]:
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            yield dict(labels), value


def _sum_by(samples: Samples, name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in _select(samples, name):
        totals[tuple(labels.get(k, "") for k in keys)] += value
    return totals


def increase(before: Samples, after: Samples, name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """Counter increase by label group; a reset (process restart) counts from zero."""
    old, new = _sum_by(before, name, keys), _sum_by(after, name, keys)
    return {group: value - old.get(group, 0.0) if value >= old.get(group, 0.0) else value for group, value in new.items()}


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts (upper bound -> count)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 0.0)
        lower_bound, lower_count = bound, count
    return None


def windowed_quantile(q: float, before: Samples, after: Samples, metric: str, model: str) -> float | None:
    grown: dict[float, float] = defaultdict(float)
    for labels, value in _select(after, f"{metric}_bucket"):
        if labels.get("model") != model:
            continue
        key = (f"{metric}_bucket", tuple(sorted(labels.items())))
        previous = before.get(key, 0.0)
        grown[float(labels["le"])] += value - previous if value >= previous else value
    return bucket_quantile(q, grown)


class ModelRow(NamedTuple):
    model: str
    requests_per_s: float
    errors_per_s: float
    in_flight: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    completion_tokens_per_s: float
    cache_hit_ratio: float | None
    healthy_endpoints: int
    endpoints: int


def model_rows(before: Samples, after: Samples, interval_s: float) -> list[ModelRow]:
    requests = increase(before, after, "corral_router_requests_total", ("model", "status"))
    tokens = increase(before, after, "corral_router_completion_tokens_total", ("model",))
    prompt = increase(before, after, "corral_router_prompt_tokens_total", ("model",))
    cached = increase(before, after, "corral_router_cached_tokens_actual_total", ("model",))
    in_flight = _sum_by(after, "corral_router_in_flight_requests", ("model",))
    health = list(_select(after, "corral_router_endpoint_healthy"))
    models = sorted({labels["model"] for labels, _ in health} | {m for m, _ in requests})
    rows = []
    for model in models:
        total = sum(v for (m, _), v in requests.items() if m == model)
        errors = sum(v for (m, status), v in requests.items() if m == model and status.startswith("5"))
        mine = [value for labels, value in health if labels["model"] == model]
        prompt_tokens = prompt.get((model,), 0.0)
        rows.append(ModelRow(
            model, total / interval_s, errors / interval_s, in_flight.get((model,), 0.0),
            windowed_quantile(0.5, before, after, "corral_router_time_to_first_token_seconds", model),
            windowed_quantile(0.99, before, after, "corral_router_time_to_first_token_seconds", model),
            tokens.get((model,), 0.0) / interval_s,
            cached.get((model,), 0.0) / prompt_tokens if prompt_tokens else None,
            sum(1 for v in mine if v >= 1), len(mine),
        ))
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def render_rows(rows: list[ModelRow], url: str, interval_s: float) -> Table:
    table = Table(title=f"corral top: {url} (last {interval_s:.0f} s)", title_justify="left")
    for column in ("model", "req/s", "5xx/s", "in flight", "TTFT p50", "TTFT p99", "tok/s", "cache hit", "healthy"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        health_style = "green" if row.healthy_endpoints == row.endpoints else "red"
        table.add_row(
            row.model, f"{row.requests_per_s:.1f}", f"{row.errors_per_s:.1f}", f"{row.in_flight:.0f}",
            _ms(row.ttft_p50_s), _ms(row.ttft_p99_s), f"{row.completion_tokens_per_s:.1f}",
            "-" if row.cache_hit_ratio is None else f"{row.cache_hit_ratio:.0%}",
            Text(f"{row.healthy_endpoints}/{row.endpoints}", style=health_style),
        )
    return table
