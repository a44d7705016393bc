"""Load from vLLM's /metrics: parsed, read on the health interval, weighed by the load scorer."""

from __future__ import annotations

from typing import Any

from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, make_stack, started

from corral.router.discovery.static import StaticDiscovery
from corral.router.endpoint import Endpoint
from corral.router.engine_load import EngineLoad, EngineLoadReader, extra_load, parse_vllm_metrics
from corral.router.pool import EndpointPool
from corral.router.routing.base import RequestContext
from corral.router.routing.scorers import LeastLoadedScorer
from corral.router.transport.asgi_transport import ASGITransport

#: The shape of a vLLM (V1) exposition: two engines of one server, and metrics around ours.
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 7.0
vllm:num_requests_running{engine="1",model_name="llama"} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 2.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="llama"} 1.2e+06
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="llama"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="llama"} 12.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="llama"} 12.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="llama"} 3.5
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
"""


def vllm_text(running: float, waiting: float, usage: float) -> str:
    return (
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f'vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {usage}\n'
    )


class FakeVllm:
    """A fake engine that also serves vLLM's /metrics text (``metrics=None``: 404)."""

    def __init__(self, name: str, metrics: str | None) -> None:
        self.engine = FakeEngine(name)
        self.metrics = metrics
        self.metrics_reads = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics" and self.metrics is not None:
            self.metrics_reads += 1
            body = self.metrics.encode()
            headers = [
                (b"content-type", b"text/plain; version=0.0.4"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.engine(scope, receive, send)


def test_parse_sums_engines_and_averages_cache_usage():
    assert parse_vllm_metrics(VLLM_METRICS) == EngineLoad(
        running=12.0, waiting=2.0, kv_cache_usage=0.375
    )


def test_parse_reads_the_old_cache_metric_and_refuses_what_is_not_vllm():
    old = vllm_text(1, 0, 0.5).replace("kv_cache_usage_perc", "gpu_cache_usage_perc")
    assert parse_vllm_metrics(old) == EngineLoad(1.0, 0.0, 0.5)
    no_usage = "\n".join(vllm_text(3, 1, 0.5).splitlines()[:4])
    assert parse_vllm_metrics(no_usage) == EngineLoad(3.0, 1.0, 0.0)
    assert parse_vllm_metrics("corral_router_requests_total 5\n") is None
    assert parse_vllm_metrics("") is None
    assert parse_vllm_metrics("vllm:num_requests_running{ 7\nvllm:num_requests_waiting 1\n") is None


def _ctx() -> RequestContext:
    return RequestContext("m", "chat", "/v1/chat/completions", {}, None, {})


def test_the_load_scorer_adds_engine_load_only_where_it_is_known():
    a, b, c = Endpoint("http://a", "m"), Endpoint("http://b", "m"), Endpoint("http://c", "m")
    scorer = LeastLoadedScorer()
    assert scorer.score(_ctx(), [a, b]) == [1.0, 1.0]  # as before: no metrics
    a.engine_load = EngineLoad(running=6, waiting=4, kv_cache_usage=0.9)  # other routers' work
    b.engine_load = EngineLoad(running=1, waiting=0, kv_cache_usage=0.1)
    assert extra_load(a) == 10.9 and extra_load(b) == 1.1 and extra_load(c) == 0.0
    assert scorer.score(_ctx(), [a, b]) == [0.0, 1.0]
    b.in_flight = 3  # this router's own count is fresher than the last read: it wins
    assert extra_load(b) == 0.1
    a.engine_load = EngineLoad(running=3, waiting=0, kv_cache_usage=0.5)
    a.in_flight = 3
    assert scorer.score(_ctx(), [a, b]) == [0.0, 1.0]  # equal requests: the emptier cache


async def test_the_pool_reads_vllm_metrics_after_each_passing_health_check():
    busy, idle, plain = (
        FakeVllm("busy", vllm_text(8, 3, 0.75)),
        FakeVllm("idle", vllm_text(0, 0, 0)),
        FakeVllm("plain", None),
    )
    network = ASGITransport({"http://busy": busy, "http://idle": idle, "http://plain": plain})
    discovery = StaticDiscovery(make_stack(["http://busy", "http://idle", "http://plain"]).models)
    reader = EngineLoadReader(network, ["chat-model"], timeout_s=1.0)
    pool = EndpointPool(["chat-model", "embed-model"], discovery, network, interval_s=60, timeout_s=1.0,
                        engine_load=reader)  # fmt: skip
    await pool.refresh()
    loads = {endpoint.url: endpoint.engine_load for endpoint in pool.endpoints("chat-model")}
    assert loads == {
        "http://busy": EngineLoad(8, 3, 0.75),
        "http://idle": EngineLoad(0, 0, 0),
        "http://plain": None,
    }
    busy.metrics = vllm_text(1, 0, 0.25)
    busy.engine.behaviour.healthy = False
    await pool.refresh()
    assert pool.endpoints("chat-model")[0].engine_load is None  # unhealthy: not read
    busy.engine.behaviour.healthy = True
    await pool.refresh()
    assert pool.endpoints("chat-model")[0].engine_load == EngineLoad(1, 0, 0.25)
    assert busy.metrics_reads == 2


async def test_the_router_sends_work_to_the_vllm_replica_that_reports_less_load():
    busy, idle = FakeVllm("busy", vllm_text(30, 12, 0.95)), FakeVllm("idle", vllm_text(2, 0, 0.2))
    urls = ["http://busy", "http://idle"]
    stack = make_stack(urls, policy="least_loaded")
    async with started(stack, ASGITransport({"http://busy": busy, "http://idle": idle})) as app:
        client = InMemoryClient(app)
        for _ in range(4):
            reply = await client.post(
                "/v1/chat/completions",
                {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert reply.status == 200
            assert reply.headers[b"x-corral-endpoint"] == b"http://idle"
    assert len(idle.engine.records) == 4 and not busy.engine.records
