"""Property-based: whatever a client sends, the router answers it (200 or 4xx), never a 5xx of its own."""

from __future__ import annotations

import asyncio

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fakes.engine import FakeEngine
from tests.router.support import InMemoryClient, make_stack, started

from corral.router.transport.asgi_transport import ASGITransport

PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/nope", "/health")
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.just(b'{"model": "chat", "messages": [], "max_tokens": 123456789012345678901234567890}'),
    st.just(b'{"model": "chat", "messages": [], "stream": true, "stream": false}'),
    JSON.map(orjson.dumps),
    st.fixed_dictionaries(
        {"model": st.one_of(st.sampled_from(["chat", "embed", "chat-model", "gpt-4", ""]), JSON)},
        optional={"stream": JSON, "messages": JSON, "prompt": JSON, "input": JSON, "user": JSON,
                  "max_tokens": JSON},
    ).map(orjson.dumps),
)
HEADERS = st.lists(
    st.tuples(st.sampled_from(["content-type", "authorization", "x-session-id", "content-length-x", "x-anything"]),
              st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), body=BODIES, headers=HEADERS)
def test_the_router_never_fails_on_client_input(path: str, body: bytes, headers: list[tuple[str, str]]) -> None:
    async def exchange() -> int:
        network = ASGITransport({"http://w1": FakeEngine("w1"), "http://w2": FakeEngine("w2")})
        async with started(make_stack(["http://w1"], ["http://w2"], policy="session"), network) as app:
            client = InMemoryClient(app)
            reply = await (client.get(path) if path in ("/v1/models", "/health") else client.post(path, body, headers))
            if reply.status >= 400:
                assert "error" in orjson.loads(reply.body), reply.body
            return reply.status

    status = asyncio.run(exchange())
    assert status < 500, (path, body, headers, status)
