"""The endpoint pool: active health checks, passive ejection, discovery, readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, make_stack, started

from corral.router.discovery.static import StaticDiscovery
from corral.router.pool import EndpointPool
from corral.router.transport.asgi_transport import ASGITransport


class ScriptedDiscovery:
    """Discovery whose answer the test changes."""

    def __init__(self, endpoints: Mapping[str, tuple[str, ...]]) -> None:
        self.current = dict(endpoints)

    async def endpoints(self) -> Mapping[str, tuple[str, ...]]:
        return self.current

    async def aclose(self) -> None:
        return None


def pool_for(
    network: ASGITransport, discovery: ScriptedDiscovery, interval_s: float = 60
) -> EndpointPool:
    return EndpointPool(["m"], discovery, network, interval_s=interval_s, timeout_s=1.0)


async def test_first_round_runs_at_start() -> None:
    up, down = FakeEngine("up"), FakeEngine("down")
    down.behaviour.healthy = False
    network = ASGITransport({"http://up": up, "http://down": down})
    pool = pool_for(network, ScriptedDiscovery({"m": ("http://up", "http://down", "http://gone")}))
    await pool.start()
    try:
        assert [(e.url, e.healthy) for e in pool.endpoints("m")] == [
            ("http://up", True),
            ("http://down", False),
            ("http://gone", False),
        ]
        assert pool.endpoints("m")[1].last_error == "/health answered 503"
        assert "cannot connect" in (pool.endpoints("m")[2].last_error or "")
    finally:
        await pool.aclose()


async def test_health_changes_are_picked_up_each_round() -> None:
    engine = FakeEngine("w")
    pool = pool_for(ASGITransport({"http://w": engine}), ScriptedDiscovery({"m": ("http://w",)}))
    await pool.refresh()
    assert pool.endpoints("m")[0].healthy
    engine.behaviour.healthy = False
    await pool.refresh()
    assert not pool.endpoints("m")[0].healthy
    assert pool.models_without_healthy_endpoint() == ["m"]
    engine.behaviour.healthy = True
    await pool.refresh()
    assert pool.endpoints("m")[0].healthy
    assert pool.models_without_healthy_endpoint() == []


async def test_ejection_lasts_until_the_next_good_health_check() -> None:
    pool = pool_for(
        ASGITransport({"http://w": FakeEngine("w")}), ScriptedDiscovery({"m": ("http://w",)})
    )
    await pool.refresh()
    endpoint = pool.endpoints("m")[0]
    pool.eject(endpoint, "connection refused")
    assert not endpoint.healthy and endpoint.last_error == "connection refused"
    await pool.refresh()
    assert endpoint.healthy and endpoint.last_error is None


async def test_background_task_checks_every_interval_and_stops_on_aclose() -> None:
    engine = FakeEngine("w")
    pool = pool_for(
        ASGITransport({"http://w": engine}),
        ScriptedDiscovery({"m": ("http://w",)}),
        interval_s=0.02,
    )
    await pool.start()
    await asyncio.sleep(0.3)
    await pool.aclose()
    checks = engine.health_checks
    assert checks >= 4  # one at start, then one every 20 ms (15 if the machine were idle)
    await asyncio.sleep(0.06)
    assert engine.health_checks == checks


async def test_discovery_adds_and_removes_endpoints_keeping_known_ones() -> None:
    network = ASGITransport({"http://a": FakeEngine("a"), "http://b": FakeEngine("b")})
    discovery = ScriptedDiscovery({"m": ("http://a",)})
    pool = pool_for(network, discovery)
    await pool.refresh()
    first = pool.endpoints("m")[0]
    first.in_flight = 2
    discovery.current = {"m": ("http://a", "http://b")}
    await pool.refresh()
    assert [e.url for e in pool.endpoints("m")] == ["http://a", "http://b"]
    assert pool.endpoints("m")[0] is first and first.in_flight == 2
    assert pool.endpoints("m")[1].healthy
    discovery.current = {"m": ("http://b",)}
    await pool.refresh()
    assert [e.url for e in pool.endpoints("m")] == ["http://b"]


async def test_static_discovery_reads_the_stack() -> None:
    stack = make_stack(["http://w1", "http://w2"], ["http://e1"])
    assert dict(await StaticDiscovery(stack.models).endpoints()) == {
        "chat-model": ("http://w1", "http://w2"),
        "embed-model": ("http://e1",),
    }


async def test_ready_names_the_models_without_a_healthy_endpoint() -> None:
    chat, embed = FakeEngine("w1"), FakeEngine("e1")
    embed.behaviour.healthy = False
    network = ASGITransport({"http://w1": chat, "http://e1": embed})
    async with started(make_stack(["http://w1"], ["http://e1"]), network) as app:
        client = InMemoryClient(app)
        assert (await client.get("/health")).status == 200
        reply = await client.get("/ready")
        assert reply.status == 503
        assert reply.json() == {"ready": False, "models_without_healthy_endpoint": ["embed-model"]}
        embed.behaviour.healthy = True
        assert app.pool is not None
        await app.pool.refresh()
        reply = await client.get("/ready")
        assert (reply.status, reply.json()) == (200, {"ready": True})


async def test_unhealthy_endpoint_gets_no_traffic_until_it_recovers() -> None:
    w1, w2 = FakeEngine("w1"), FakeEngine("w2")
    network = ASGITransport({"http://w1": w1, "http://w2": w2})
    async with started(
        make_stack(["http://w1", "http://w2"], policy="round_robin"), network
    ) as app:
        assert app.pool is not None
        client = InMemoryClient(app)
        w1.behaviour.healthy = False
        await app.pool.refresh()
        for _ in range(4):
            assert (
                await client.post("/v1/chat/completions", {"model": "chat", "messages": []})
            ).status == 200
        assert (len(w1.records), len(w2.records)) == (0, 4)
        w1.behaviour.healthy = True
        await app.pool.refresh()
        for _ in range(4):
            await client.post("/v1/chat/completions", {"model": "chat", "messages": []})
        assert (len(w1.records), len(w2.records)) == (2, 6)
