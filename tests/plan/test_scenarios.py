"""The seed's three scenarios, and the explanation of the gap to its cost figures."""

from __future__ import annotations

import pytest

from corral.plan.scenarios import SCENARIOS, run_scenario


@pytest.fixture(scope="module")
def results():
    return {name: run_scenario(name) for name in SCENARIOS}


def test_every_scenario_plans_every_model_the_seed_names(results):
    assert [model for model, _ in SCENARIOS["small"].models] == [
        "llama-3.1-8b", "mistral-7b-v0.3", "qwen2.5-7b", "llama-3.1-8b"]
    for name, result in results.items():
        assert len(result.plans) == len(SCENARIOS[name].models)
        assert all(plan.top is not None for plan in result.plans), name
        assert result.best is not None


def test_small_explains_why_on_demand_exceeds_400_to_600(results):
    gap = "\n".join(results["small"].gap)
    assert "the seed's g6e.xlarge on demand: $1.861/h x 730 h = $1,359/month" in gap
    assert "above the seed's $600" in gap
    assert "h/month instead of 730" in gap
    assert "reserved-3y" in gap
    assert "instance: within $600, 1 x g6.xlarge" in gap


def test_medium_70b_models_land_in_the_seed_range(results):
    result = results["medium"]
    llama = next(plan for plan in result.plans if plan.request.model.name == "llama-3.1-70b")
    assert llama.top.instance == "g6e.12xlarge" and llama.top.tp == 4
    assert 3000 <= llama.top.monthly_usd <= 8000
    assert any("llama-3.1-70b (fp8)" in line and "within the seed's range" in line for line in result.gap)


def test_large_explains_the_missing_p5e_price(results):
    result = results["large"]
    gap = "\n".join(result.gap)
    assert "p5e.48xlarge has no on-demand price" in gap
    assert "p5en.48xlarge = $46,206/month" in gap
    deepseek = next(plan for plan in result.plans if plan.request.model.name == "deepseek-r1")
    assert deepseek.top.monthly_usd >= 30_000


def test_scenario_overrides_reach_the_requests():
    result = run_scenario("small", pricing="reserved-3y")
    assert all(plan.request.pricing == "reserved-3y" for plan in result.plans)
    assert result.best[1].monthly_usd < run_scenario("small").best[1].monthly_usd
