"""The router on real 127.0.0.1 sockets with its aiohttp transport, in front of fake engines."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from tests.fakes.engine import Behaviour, FakeEngine
from tests.fakes.server import serve_app
from tests.router.support import make_stack, serving, serving_router

from corral.protocol.sse import DONE, FrameSplitter

CHAT = "/v1/chat/completions"


async def wait_until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_body_and_response_pass_through_unchanged() -> None:
    engine = FakeEngine("w1")
    body = b'{"model":"chat",  "messages":[{"role":"user","content":"\\u00e9\xf0\x9f\x98\x80"}] ,"n":1}'
    async with serving(engine) as urls, serving_router(make_stack(urls)) as (router, _):
        async with aiohttp.ClientSession() as http:
            async with http.post(
                router + CHAT, data=body, headers={"content-type": "application/json"}
            ) as reply:
                received = await reply.read()
                assert reply.status == 200
                assert reply.headers["x-corral-endpoint"] == urls[0]
    assert engine.records[0].body == body
    assert received == bytes(engine.records[0].sent)


async def test_one_pooled_connection_is_reused_for_sequential_requests() -> None:
    engine = FakeEngine("w1")
    async with serving(engine) as urls, serving_router(make_stack(urls)) as (router, _):
        async with aiohttp.ClientSession() as http:
            for stream in (False, True, False, True, False):
                async with http.post(
                    router + CHAT, json={"model": "chat", "stream": stream}
                ) as reply:
                    assert reply.status == 200
                    await reply.read()
    assert len({record.client for record in engine.records}) == 1


async def test_a_cookie_one_client_got_from_a_worker_is_never_sent_for_another() -> None:
    """The router's one client session is shared by every client: it keeps no cookies."""
    engine = FakeEngine("w1")

    async def setting_cookies(scope: Any, receive: Any, send: Any) -> None:
        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"set-cookie", b"session=alice; Path=/")]
            await send(message)

        await engine(scope, receive, send_with_cookie)

    async with serving(setting_cookies) as urls:
        # By name, not IP: a cookie jar keeps cookies of named hosts (a Kubernetes service, say).
        named = [url.replace("127.0.0.1", "localhost") for url in urls]
        async with serving_router(make_stack(named)) as (router, _):
            for _client in range(2):  # two clients, each with its own session
                async with aiohttp.ClientSession() as http, http.post(router + CHAT, json={"model": "chat"}) as reply:
                    assert reply.status == 200
                    assert reply.headers["set-cookie"] == "session=alice; Path=/"  # passed on to its client
    assert [record.headers.get("cookie") for record in engine.records] == [None, None]


async def test_5xx_before_first_byte_is_retried_on_another_replica() -> None:
    w1, w2 = FakeEngine("w1"), FakeEngine("w2")
    async with serving(w1, w2) as urls:
        async with serving_router(make_stack(urls, policy="round_robin")) as (router, _):
            w1.fail_next(503)  # round robin starts at w1: 503, retried on w2
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    router + CHAT, json={"model": "chat", "messages": []}
                ) as reply:
                    assert reply.status == 200
                    assert reply.headers["x-corral-endpoint"] == urls[1]
                    assert await reply.read() == bytes(w2.records[0].sent)
    assert [r.outcome for r in w1.records] == ["failed"]


async def test_connect_error_is_retried_on_another_replica_and_ejects() -> None:
    w1, w2 = FakeEngine("w1"), FakeEngine("w2")
    async with serving(w2) as (url2,), contextlib.AsyncExitStack() as doomed:
        url1 = await doomed.enter_async_context(serve_app(w1, lifespan="off"))
        async with serving_router(make_stack([url1, url2], policy="round_robin")) as (router, app):
            await doomed.aclose()  # w1 was healthy; now its port refuses connections
            async with aiohttp.ClientSession() as http:
                async with http.post(router + CHAT, json={"model": "chat"}) as reply:
                    assert reply.status == 200
                    assert reply.headers["x-corral-endpoint"] == url2
            assert app.pool is not None
            assert [e.healthy for e in app.pool.endpoints("chat-model")] == [False, True]
    assert w1.records == [] and len(w2.records) == 1


async def test_unhealthy_endpoint_is_ejected_and_comes_back() -> None:
    w1, w2 = FakeEngine("w1"), FakeEngine("w2")
    async with serving(w1, w2) as urls:
        stack = make_stack(urls, policy="round_robin", health_interval_s=0.05)
        async with serving_router(stack) as (router, app), aiohttp.ClientSession() as http:
            assert app.pool is not None
            endpoints = app.pool.endpoints("chat-model")
            w1.behaviour.healthy = False
            await wait_until(lambda: not endpoints[0].healthy)
            for _ in range(6):
                async with http.post(router + CHAT, json={"model": "chat"}) as reply:
                    assert reply.status == 200
            assert (len(w1.records), len(w2.records)) == (0, 6)
            w1.behaviour.healthy = True
            await wait_until(lambda: endpoints[0].healthy)
            for _ in range(6):
                async with http.post(router + CHAT, json={"model": "chat"}) as reply:
                    assert reply.status == 200
    assert (len(w1.records), len(w2.records)) == (3, 9)


@pytest.mark.slow
async def test_fifty_concurrent_streams_each_get_exactly_their_bytes() -> None:
    behaviour = Behaviour(ttft_s=0.005, itl_s=0.002, tokens=20)
    w1, w2 = FakeEngine("w1", behaviour=behaviour), FakeEngine("w2", behaviour=behaviour)

    async def one(http: aiohttp.ClientSession, router: str, index: int) -> tuple[str, bytes]:
        request_id = f"stream-{index}"
        body = {
            "model": "chat",
            "stream": True,
            "messages": [{"role": "user", "content": request_id}],
        }
        async with http.post(
            router + CHAT, json=body, headers={"x-request-id": request_id}
        ) as reply:
            assert reply.status == 200
            return request_id, b"".join([chunk async for chunk in reply.content.iter_any()])

    async with serving(w1, w2) as urls, serving_router(make_stack(urls)) as (router, _):
        async with aiohttp.ClientSession() as http:
            received = dict(await asyncio.gather(*(one(http, router, i) for i in range(50))))
    sent = {record.request_id: bytes(record.sent) for record in [*w1.records, *w2.records]}
    assert len(sent) == 50 and set(sent) == set(received)
    for request_id, data in received.items():
        assert data == sent[request_id], request_id
        assert data.endswith(DONE)
    assert min(len(w1.records), len(w2.records)) >= 15  # least_loaded spread them


async def test_client_disconnect_mid_stream_cancels_the_worker_request() -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(itl_s=0.05, tokens=200))
    async with serving(engine) as urls, serving_router(make_stack(urls)) as (router, app):
        async with aiohttp.ClientSession() as http:
            reply = await http.post(router + CHAT, json={"model": "chat", "stream": True})
            await reply.content.readany()
            await reply.content.readany()
            reply.close()  # the client goes away mid-stream
            left_at = time.monotonic()
            assert await engine.records[0].wait(2.0) == "cancelled"
            assert engine.records[0].ended_s is not None
            assert engine.records[0].ended_s - left_at < 0.5
            assert app.pool is not None
            pool = app.pool
            await wait_until(lambda: pool.endpoints("chat-model")[0].in_flight == 0)


async def test_client_disconnect_before_the_first_byte_cancels_too() -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(ttft_s=5.0))
    async with serving(engine) as urls, serving_router(make_stack(urls)) as (router, _):
        async with aiohttp.ClientSession() as http:
            with pytest.raises(TimeoutError):
                await http.post(
                    router + CHAT, json={"model": "chat"}, timeout=aiohttp.ClientTimeout(total=0.2)
                )
            assert await engine.records[0].wait(1.0) == "cancelled"


async def test_mid_stream_failure_sends_an_error_frame_and_ends_cleanly() -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(itl_s=0.001, tokens=10))
    async with serving(engine) as urls, serving_router(make_stack(urls)) as (router, _):
        engine.drop_next(after_chunks=3)
        async with aiohttp.ClientSession() as http:
            async with http.post(router + CHAT, json={"model": "chat", "stream": True}) as reply:
                data = await reply.read()  # raises if the stream did not end cleanly
    sent = bytes(engine.records[0].sent)
    assert data.startswith(sent)
    frames = [orjson.loads(frame) for frame in FrameSplitter().feed(data)]
    assert len(frames) == 4
    assert frames[-1]["error"]["code"] == "upstream_error"


async def test_request_timeout_is_504() -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(ttft_s=2.0))
    async with (
        serving(engine) as urls,
        serving_router(make_stack(urls, request_timeout_s=0.2)) as (router, _),
    ):
        async with aiohttp.ClientSession() as http:
            async with http.post(router + CHAT, json={"model": "chat"}) as reply:
                assert reply.status == 504
                assert (await reply.json())["error"]["type"] == "timeout_error"


async def test_oversize_body_is_413_over_the_wire() -> None:
    async with (
        serving(FakeEngine("w1")) as urls,
        serving_router(make_stack(urls, max_body_bytes=4096)) as (router, _),
    ):
        async with aiohttp.ClientSession() as http:
            body = orjson.dumps({"model": "chat", "prompt": "x" * 5000})
            async with http.post(router + "/v1/completions", data=body) as reply:
                assert reply.status == 413
                assert (await reply.json())["error"]["code"] == "payload_too_large"
