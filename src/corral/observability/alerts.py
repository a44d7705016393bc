"""Prometheus alert rules for a corral stack (a rules file `promtool check rules` accepts)."""

from __future__ import annotations

from typing import Any, NamedTuple

from corral.observability import queries as q


class AlertThresholds(NamedTuple):
    ttft_p99_s: float = 10.0
    error_ratio: float = 0.05
    queue_fill: float = 0.8
    prediction_agreement: float = 0.9


def _rule(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


def alert_rules(thresholds: AlertThresholds | None = None) -> dict[str, Any]:
    t = thresholds or AlertThresholds()
    ttft = q.quantile(0.99, "corral_router_time_to_first_token_seconds", window="5m")
    return {
        "groups": [
            {
                "name": "corral",
                "rules": [
                    _rule("CorralTTFTHigh", f"{ttft} > {t.ttft_p99_s}", "5m", "warning",
                          f"TTFT p99 of {{{{ $labels.model }}}} is above {t.ttft_p99_s} s"),
                    _rule("CorralErrorRateHigh", f"{q.error_ratio()} > {t.error_ratio}", "5m", "critical",
                          f"more than {t.error_ratio:.0%} of {{{{ $labels.model }}}} requests fail with 5xx"),
                    _rule("CorralEndpointDown", "corral_router_endpoint_healthy == 0", "1m", "warning",
                          "endpoint {{ $labels.endpoint }} of {{ $labels.model }} fails its health checks"),
                    _rule("CorralQueueSaturated", f"{q.queue_fill()} > {t.queue_fill}", "2m", "warning",
                          f"worker {{{{ $labels.instance }}}} queue is over {t.queue_fill:.0%} full"),
                    _rule("CorralCachePredictionDrift",
                          f"{q.prediction_agreement(window='15m')} < {t.prediction_agreement}"
                          " and sum by (model) (rate(corral_router_cache_predictions_total[15m])) > 0",
                          "15m", "info",
                          "the router's cache-hit predictions for {{ $labels.model }} disagree with the workers"),
                ],
            }
        ]
    }


def rule_queries(rules: dict[str, Any]) -> list[tuple[str, str]]:
    """(alert name, PromQL) for every rule."""
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
