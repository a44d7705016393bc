"""PromQL for corral's metrics, written once and used by the dashboards, the alert rules
and `corral top`. ``model`` is a label matcher fragment (``model="$model"`` on a
per-model dashboard, empty elsewhere)."""

from __future__ import annotations


def _sel(matcher: str) -> str:
    return "{" + matcher + "}" if matcher else ""


def requests_per_s(by: str = "model", matcher: str = "", window: str = "1m") -> str:
    return f"sum by ({by}) (rate(corral_router_requests_total{_sel(matcher)}[{window}]))"


def error_ratio(by: str = "model", matcher: str = "", window: str = "5m") -> str:
    errors = f'corral_router_requests_total{{status=~"5..",{matcher}}}' if matcher else 'corral_router_requests_total{status=~"5.."}'
    return (
        f"(sum by ({by}) (rate({errors}[{window}])) or {requests_per_s(by, matcher, window)} * 0)"
        f" / clamp_min({requests_per_s(by, matcher, window)}, 1e-9)"
    )


def quantile(q: float, metric: str, by: str = "model", matcher: str = "", window: str = "1m") -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{_sel(matcher)}[{window}])))"
    )


def rate_sum(metric: str, by: str = "model", matcher: str = "", window: str = "1m") -> str:
    return f"sum by ({by}) (rate({metric}{_sel(matcher)}[{window}]))"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator} / clamp_min({denominator}, 1e-9)"


def cache_hit_ratio(by: str = "model", matcher: str = "", window: str = "5m") -> str:
    return ratio(
        rate_sum("corral_worker_cached_prompt_tokens_total", by, matcher, window),
        rate_sum("corral_worker_prompt_tokens_total", by, matcher, window),
    )


def prediction_agreement(by: str = "model", matcher: str = "", window: str = "5m") -> str:
    agree = f'outcome="agree",{matcher}' if matcher else 'outcome="agree"'
    return ratio(
        rate_sum("corral_router_cache_predictions_total", by, agree, window),
        rate_sum("corral_router_cache_predictions_total", by, matcher, window),
    )


def queue_fill(matcher: str = "") -> str:
    return ratio(f"corral_worker_queue_depth{_sel(matcher)}", f"corral_worker_queue_capacity{_sel(matcher)}")
