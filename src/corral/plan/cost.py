"""Money: per month, per million tokens, and the pricing models around on-demand.

A month is 730 hours (24 * 365 / 12), AWS's own convention for monthly estimates. The
reserved and spot multipliers are rough assumptions for comparison, not quoted prices:
Savings Plans, reservations and spot markets differ by instance, region and term, so
check the AWS pricing pages, or pass your own multiplier.
"""

from __future__ import annotations

HOURS_PER_MONTH = 730.0

#: Price multiplier relative to on-demand (assumptions, see the module docstring).
PRICING: dict[str, float] = {
    "on-demand": 1.0,
    "reserved-1y": 0.6,
    "reserved-3y": 0.4,
    "spot": 0.35,
}


def monthly_cost_usd(usd_per_hour: float, instances: int, *, hours: float = HOURS_PER_MONTH,
                     multiplier: float = 1.0) -> float:
    """$/month = $/hour * instances * hours per month * pricing multiplier."""
    return usd_per_hour * instances * hours * multiplier


def usd_per_million_tokens(monthly_usd: float, tokens_per_s: float, *, hours: float = HOURS_PER_MONTH) -> float | None:
    """$ per 1M tokens = $/month ÷ (tokens/s * 3600 * hours per month) * 10⁶."""
    if tokens_per_s <= 0:
        return None
    return monthly_usd / (tokens_per_s * 3600 * hours) * 1e6


def hours_within(monthly_usd_limit: float, usd_per_hour: float, instances: int, *, multiplier: float = 1.0) -> float:
    """Hours a month the deployment can run for ``monthly_usd_limit``."""
    return monthly_usd_limit / (usd_per_hour * instances * multiplier)


def multiplier_within(monthly_usd_limit: float, monthly_usd_on_demand: float) -> float:
    """The discount on on-demand needed to land at ``monthly_usd_limit`` (1.0 = none)."""
    return monthly_usd_limit / monthly_usd_on_demand
