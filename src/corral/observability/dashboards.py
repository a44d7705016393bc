"""Grafana dashboards as JSON (schema version 39), built from corral.observability.queries.

Four dashboards: the stack overview, one per model (a ``$model`` variable), routing and
cache, and workers. Every panel's PromQL is also run against a real Prometheus in the
tests, so a renamed metric breaks the build rather than a panel.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from corral.observability import queries as q

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


class Panel(NamedTuple):
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"


def _overview(m: str = "") -> list[Panel]:
    return [
        Panel("Requests/s", ((q.requests_per_s(matcher=m), "{{model}}"),), "reqps"),
        Panel("Error ratio (5xx)", ((q.error_ratio(matcher=m), "{{model}}"),), "percentunit"),
        Panel("TTFT p50 / p99", (
            (q.quantile(0.5, "corral_router_time_to_first_token_seconds", matcher=m), "p50 {{model}}"),
            (q.quantile(0.99, "corral_router_time_to_first_token_seconds", matcher=m), "p99 {{model}}"),
        ), "s"),
        Panel("Inter-token latency p50 / p99", (
            (q.quantile(0.5, "corral_router_inter_token_latency_seconds", matcher=m), "p50 {{model}}"),
            (q.quantile(0.99, "corral_router_inter_token_latency_seconds", matcher=m), "p99 {{model}}"),
        ), "s"),
        Panel("End-to-end latency p50 / p99", (
            (q.quantile(0.5, "corral_router_request_duration_seconds", matcher=m), "p50 {{model}}"),
            (q.quantile(0.99, "corral_router_request_duration_seconds", matcher=m), "p99 {{model}}"),
        ), "s"),
        Panel("Tokens/s", (
            (q.rate_sum("corral_router_completion_tokens_total", matcher=m), "completion {{model}}"),
            (q.rate_sum("corral_router_prompt_tokens_total", matcher=m), "prompt {{model}}"),
        ), "short"),
        Panel("In-flight requests", ((f"sum by (model) (corral_router_in_flight_requests{q._sel(m)})", "{{model}}"),)),
    ]


def _routing() -> list[Panel]:
    return [
        Panel("Routing decisions/s", ((q.rate_sum("corral_router_routing_decisions_total", "policy, reason"), "{{policy}} {{reason}}"),)),
        Panel("Retries/s", ((q.rate_sum("corral_router_retries_total"), "{{model}}"),)),
        Panel("Upstream errors/s", ((q.rate_sum("corral_router_upstream_errors_total", "model, kind"), "{{model}} {{kind}}"),)),
        Panel("Worker prefix-cache hit ratio (tokens)", ((q.cache_hit_ratio(), "{{model}}"),), "percentunit"),
        Panel("Predicted vs actual cached tokens/s", (
            (q.rate_sum("corral_router_cached_tokens_predicted_total"), "predicted {{model}}"),
            (q.rate_sum("corral_router_cached_tokens_actual_total"), "actual {{model}}"),
        )),
        Panel("Prediction agreement", ((q.prediction_agreement(), "{{model}}"),), "percentunit"),
        Panel("KV tier hits/s (prompts whose prefix came from the tier)",
              ((q.rate_sum("corral_worker_kv_tier_hits_total", "tier"), "{{tier}}"),)),
        Panel("Prompt tokens not prefilled thanks to each tier/s",
              ((q.rate_sum("corral_worker_kv_tier_hit_tokens_total", "tier"), "{{tier}}"),)),
        Panel("KV tier bytes", (("sum by (tier) (corral_worker_kv_tier_bytes)", "{{tier}}"),), "bytes"),
        Panel("Disaggregated prefills/s by outcome",
              ((q.rate_sum("corral_router_prefills_total", "model, outcome"), "{{model}} {{outcome}}"),)),
    ]


def _workers() -> list[Panel]:
    return [
        Panel("Endpoint health", (("corral_router_endpoint_healthy", "{{model}} {{endpoint}}"),)),
        Panel("Queue depth", (("corral_worker_queue_depth", "{{instance}}"),)),
        Panel("Queue fill", ((q.queue_fill(), "{{instance}}"),), "percentunit"),
        Panel("Running sequences", (("corral_worker_running_sequences", "{{instance}}"),)),
        Panel("Generated tokens/s per worker", (("rate(corral_worker_generation_tokens_total[1m])", "{{instance}}"),)),
        Panel("Worker TTFT p99", ((q.quantile(0.99, "corral_worker_time_to_first_token_seconds", "instance"), "{{instance}}"),), "s"),
        Panel("Worker inter-token p99", ((q.quantile(0.99, "corral_worker_inter_token_latency_seconds", "instance"), "{{instance}}"),), "s"),
        Panel("Resident memory", (('process_resident_memory_bytes{job=~"corral.*"}', "{{job}} {{instance}}"),), "bytes"),
        Panel("Model load time", (("corral_worker_model_load_seconds", "{{model}} {{instance}}"),), "s"),
    ]


def _panel_json(panel: Panel, index: int) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.exprs)
        ],
    }


def _variables(per_model: bool) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    ]
    if per_model:
        variables.append({
            "name": "model", "type": "query", "label": "Model", "datasource": DATASOURCE,
            "query": {"query": "label_values(corral_router_requests_total, model)", "refId": "model"},
            "refresh": 2,
        })
    return variables


def _dashboard(uid: str, title: str, panels: list[Panel], *, per_model: bool = False) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["corral"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {"list": _variables(per_model)},
        "panels": [_panel_json(p, i) for i, p in enumerate(panels)],
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {
        "corral-overview.json": _dashboard("corral-overview", "corral / stack overview", _overview()),
        "corral-model.json": _dashboard("corral-model", "corral / model", _overview('model="$model"'), per_model=True),
        "corral-routing-cache.json": _dashboard("corral-routing-cache", "corral / routing and cache", _routing()),
        "corral-workers.json": _dashboard("corral-workers", "corral / workers", _workers()),
    }


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of a dashboard."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
