"""Cost arithmetic and token-count parsing."""

from __future__ import annotations

import pytest

from corral.plan.cost import (
    HOURS_PER_MONTH,
    PRICING,
    hours_within,
    monthly_cost_usd,
    multiplier_within,
    usd_per_million_tokens,
)
from corral.plan.units import parse_tokens


def test_a_month_is_730_hours():
    assert HOURS_PER_MONTH == 24 * 365 / 12 == 730


def test_monthly_cost():
    assert monthly_cost_usd(1.861, 1) == pytest.approx(1358.53)  # g6e.xlarge on demand
    assert monthly_cost_usd(55.04, 2) == pytest.approx(80_358.40)  # 2x p5.48xlarge
    assert monthly_cost_usd(1.861, 1, multiplier=PRICING["reserved-3y"]) == pytest.approx(543.412)
    assert monthly_cost_usd(1.861, 1, hours=264) == pytest.approx(491.304)  # 12 h x 22 days


def test_cost_per_million_tokens():
    # $730 a month for 1 token/s: 730 / (3600 x 730) x 1e6 = $277.78 per 1M tokens
    assert usd_per_million_tokens(730.0, 1.0) == pytest.approx(1e6 / 3600)
    assert usd_per_million_tokens(1358.53, 1000.0) == pytest.approx(1358.53 / (1000 * 3600 * 730) * 1e6)
    assert usd_per_million_tokens(100.0, 0.0) is None


def test_what_closes_a_gap():
    assert hours_within(600, 1.861, 1) == pytest.approx(322.4, abs=0.1)
    assert multiplier_within(600, 1358.53) == pytest.approx(0.4417, abs=1e-4)
    assert set(PRICING) == {"on-demand", "reserved-1y", "reserved-3y", "spot"}
    assert PRICING["on-demand"] == 1.0


@pytest.mark.parametrize(("text", "tokens"), [("8k", 8192), ("128K", 131072), ("32768", 32768), ("1m", 1_048_576),
                                              ("1.5k", 1536), (" 2k ", 2048)])
def test_parse_tokens(text, tokens):
    assert parse_tokens(text) == tokens


@pytest.mark.parametrize("text", ["8q", "", "k", "-5", "0", "1.3k", "8 kb"])
def test_parse_tokens_rejects(text):
    with pytest.raises(ValueError):
        parse_tokens(text)
