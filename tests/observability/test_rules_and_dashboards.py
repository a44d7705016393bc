import json
import shutil
import subprocess

import pytest
import yaml

from corral.config import load_stack
from corral.observability.alerts import alert_rules, rules
from corral.observability.dashboards import dashboards, panel_queries
from corral.observability.prometheus import scrape_config, write_observability_files


def test_every_dashboard_panel_has_queries_and_unique_ids():
    for name, dashboard in dashboards().items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        assert all(expr for _, expr in panel_queries(dashboard)), name
        json.dumps(dashboard)


def test_per_model_dashboard_is_templated():
    model = dashboards()["corral-model.json"]
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource", "model"]
    assert all('model="$model"' in expr for _, expr in panel_queries(model))


def test_scrape_config_covers_router_and_every_worker():
    stack = load_stack().model_copy()
    models = tuple(
        m.model_copy(update={"endpoints": (f"http://127.0.0.1:{9000 + i}",)}) for i, m in enumerate(stack.models)
    )
    config = scrape_config(stack.model_copy(update={"models": models}))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["corral-router"]["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
    workers = jobs["corral-workers"]["static_configs"]
    assert {w["labels"]["model"] for w in workers} == {m.name for m in models}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with `make test` (Debian prometheus)")
def test_promtool_accepts_rules_and_config(tmp_path):
    write_observability_files(load_stack(), tmp_path)
    for args in (["check", "rules", str(tmp_path / "corral-rules.yml")], ["check", "config", str(tmp_path / "prometheus.yml")]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_name_their_thresholds():
    document = alert_rules()
    names = [rule["alert"] for rule in document["groups"][0]["rules"]]
    assert names == ["CorralTTFTHigh", "CorralErrorRateHigh", "CorralEndpointDown", "CorralQueueSaturated", "CorralCachePredictionDrift"]
    assert yaml.safe_load(yaml.safe_dump(document)) == document
    assert all(rule.expr.startswith(rule.signal) for rule in rules())
