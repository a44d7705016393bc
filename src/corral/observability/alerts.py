"""Prometheus alert rules for a corral stack (a rules file `promtool check rules` accepts)."""

from __future__ import annotations

from typing import Any, NamedTuple

from corral.observability import queries as q


class AlertThresholds(NamedTuple):
    ttft_p99_s: float = 10.0
    error_ratio: float = 0.05
    queue_fill: float = 0.8
    prediction_agreement: float = 0.9


class AlertRule(NamedTuple):
    """``signal`` is the PromQL measured; the rule fires when ``signal condition`` holds."""

    name: str
    signal: str
    condition: str
    for_: str
    severity: str
    summary: str

    @property
    def expr(self) -> str:
        return f"{self.signal} {self.condition}"


def rules(thresholds: AlertThresholds | None = None) -> list[AlertRule]:
    t = thresholds or AlertThresholds()
    ttft = q.quantile(0.99, "corral_router_time_to_first_token_seconds", window="5m")
    return [
        AlertRule("CorralTTFTHigh", ttft, f"> {t.ttft_p99_s}", "5m", "warning",
                  f"TTFT p99 of {{{{ $labels.model }}}} is above {t.ttft_p99_s} s"),
        AlertRule("CorralErrorRateHigh", q.error_ratio(), f"> {t.error_ratio}", "5m", "critical",
                  f"more than {t.error_ratio:.0%} of {{{{ $labels.model }}}} requests fail with 5xx"),
        AlertRule("CorralEndpointDown", "corral_router_endpoint_healthy", "== 0", "1m", "warning",
                  "endpoint {{ $labels.endpoint }} of {{ $labels.model }} fails its health checks"),
        AlertRule("CorralQueueSaturated", q.queue_fill(), f"> {t.queue_fill}", "2m", "warning",
                  f"worker {{{{ $labels.instance }}}} queue is over {t.queue_fill:.0%} full"),
        AlertRule("CorralCachePredictionDrift", q.prediction_agreement(window="15m"),
                  f"< {t.prediction_agreement} and on (model) "
                  "sum by (model) (rate(corral_router_cache_predictions_total[15m])) > 0",
                  "15m", "info",
                  "the router's cache-hit predictions for {{ $labels.model }} disagree with the workers"),
    ]


def alert_rules(thresholds: AlertThresholds | None = None) -> dict[str, Any]:
    """The rules file: one group, every rule with its severity and summary."""
    return {
        "groups": [
            {
                "name": "corral",
                "rules": [
                    {"alert": r.name, "expr": r.expr, "for": r.for_, "labels": {"severity": r.severity},
                     "annotations": {"summary": r.summary}}
                    for r in rules(thresholds)
                ],
            }
        ]
    }
