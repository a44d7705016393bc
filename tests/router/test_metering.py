"""Router metrics through the real app, the in-memory transport and fake engines."""

from __future__ import annotations

from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, make_stack, started

from corral.observability.top import parse_samples
from corral.router.transport.asgi_transport import ASGITransport


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_stream_records_ttft_once_a_gap_per_chunk_and_its_usage() -> None:
    engine = FakeEngine("w1")
    async with started(make_stack(["http://w1"]), ASGITransport({"http://w1": engine})) as app:
        client = InMemoryClient(app)
        body = {"model": "chat", "messages": [], "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}}
        reply = await client.post("/v1/chat/completions", body)
        assert reply.status == 200
        await client.post("/v1/chat/completions", {"model": "chat", "messages": [], "max_tokens": 3})
        await client.post("/v1/chat/completions", {"model": "gpt-4", "messages": []})
        samples = parse_samples((await client.get("/metrics")).body.decode())
    assert _value(samples, "corral_router_time_to_first_token_seconds_count", model="chat-model") == 1
    gaps = _value(samples, "corral_router_inter_token_latency_seconds_count", model="chat-model")
    assert gaps >= 5  # five content chunks, then the finish, usage and [DONE] frames
    assert _value(samples, "corral_router_request_duration_seconds_count", model="chat-model") == 2
    assert _value(samples, "corral_router_requests_total", model="chat-model", endpoint="http://w1", status="200") == 2
    assert _value(samples, "corral_router_requests_total", model="unknown", endpoint="none", status="404") == 1
    assert _value(samples, "corral_router_completion_tokens_total", model="chat-model") == 5 + 3
    assert _value(samples, "corral_router_endpoint_healthy", model="chat-model", endpoint="http://w1") == 1
    assert _value(samples, "corral_router_in_flight_requests", model="chat-model", endpoint="http://w1") == 0
    assert _value(samples, "corral_router_routing_decisions_total", model="chat-model", policy="least_loaded", reason="pick") == 2


async def test_retries_and_upstream_errors_are_counted() -> None:
    w1, w2 = FakeEngine("w1"), FakeEngine("w2")
    network = ASGITransport({"http://w1": w1, "http://w2": w2})
    async with started(make_stack(["http://w1", "http://w2"], policy="round_robin"), network) as app:
        w1.fail_next(503)
        client = InMemoryClient(app)
        assert (await client.post("/v1/chat/completions", {"model": "chat", "messages": []})).status == 200
        samples = parse_samples((await client.get("/metrics")).body.decode())
    assert _value(samples, "corral_router_retries_total", model="chat-model") == 1
    assert _value(samples, "corral_router_upstream_errors_total", model="chat-model", endpoint="http://w1", kind="status") == 1
    assert _value(samples, "corral_router_routing_decisions_total", model="chat-model", policy="round_robin", reason="retry") == 1
