"""A real stack and a real Prometheus: every dashboard panel and alert rule query returns data."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request

import openai
import pytest
import yaml
from tests.integration.conftest import start_stack, stop_stack

from corral.observability.alerts import rules
from corral.observability.dashboards import dashboards, panel_queries
from corral.supervisor.layout import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="make test installs Debian's prometheus"),
]

CHAT = "smollm2-135m-instruct"


def _query(base: str, promql: str) -> dict:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def observed_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observed")
    prometheus_port = free_port()
    stack_file = tmp / "stack.yaml"
    stack_file.write_text(yaml.safe_dump({
        "observability": {"prometheus": True, "prometheus_port": prometheus_port, "scrape_interval_s": 1},
        # A prefill worker and a decode worker, handing KV over through the Redis tier, so that
        # the tier and prefill panels have data too.
        "cache": {"redis": {}, "chunk_tokens": 16},
        "redis": {"port": 0},
        "router": {"prefill_min_tokens": 16},
        "models": [
            {"name": CHAT, "task": "chat", "engine": "llamacpp", "source": "smollm2-135m-instruct",
             "replicas": 2, "prefill_replicas": 1, "context_length": 1024},
            {"name": "minilm-l6-v2", "task": "embedding", "engine": "onnx-embed", "source": "minilm-l6-v2",
             "context_length": 256},
        ],
    }))
    stack = start_stack(stack_file, tmp)
    try:
        yield stack, f"http://127.0.0.1:{prometheus_port}"
    finally:
        stop_stack(stack)


def _drive_traffic(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    question = [{"role": "user", "content": "Name three colours."}]
    for _ in range(3):
        client.chat.completions.create(model=CHAT, messages=question, max_tokens=8)
        list(client.chat.completions.create(model=CHAT, messages=question, max_tokens=8, stream=True,
                                            stream_options={"include_usage": True}))
    client.embeddings.create(model="minilm-l6-v2", input=["a", "b"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=question)


def test_every_panel_and_alert_query_returns_data(observed_stack):
    stack, prometheus = observed_stack
    _drive_traffic(stack.base_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # two scrapes after the traffic, so rates have two points
        found = _query(prometheus, "count(corral_router_requests_total)")["data"]["result"]
        if found and int(float(found[0]["value"][1])) >= 3:
            time.sleep(2.5)
            break
        time.sleep(0.5)
    queries = [(f"{name}: {title}", expr.replace("$model", CHAT))
               for name, dashboard in dashboards().items() for title, expr in panel_queries(dashboard)]
    queries += [(f"alert {rule.name}", rule.signal) for rule in rules()]
    empty = []
    for label, expr in queries:
        answer = _query(prometheus, expr)
        assert answer["status"] == "success", (label, expr, answer)
        if not answer["data"]["result"]:
            empty.append(label)
    assert not empty, f"queries with no data: {empty}"


def test_alert_rules_are_loaded(observed_stack):
    _, prometheus = observed_stack
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    assert {r["name"] for g in groups for r in g["rules"]} == {rule.name for rule in rules()}
