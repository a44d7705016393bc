"""Property-based: whatever a client sends, the worker answers 200 or a 4xx in OpenAI's shape."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from tests.worker.support import FakeTextEngine, model_config

from corral.worker.app import create_app

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = {
    "messages": st.one_of(JSON, st.lists(st.fixed_dictionaries({"role": JSON, "content": JSON}), max_size=3)),
    "prompt": JSON, "max_tokens": JSON, "max_completion_tokens": JSON, "temperature": JSON, "top_p": JSON,
    "seed": JSON, "stop": JSON, "stream": JSON, "stream_options": JSON, "n": JSON, "logprobs": JSON,
    "tools": JSON, "response_format": JSON, "input": JSON, "encoding_format": JSON, "tokens": JSON,
}
BODIES = st.one_of(
    st.binary(max_size=120),
    st.fixed_dictionaries({"model": st.sampled_from(["test-model", "other", ""])},
                          optional=FIELDS).map(orjson.dumps),
)
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), body=BODIES)
def test_the_worker_never_fails_on_client_input(path: str, body: bytes) -> None:
    engine = FakeTextEngine(context_length=4096, capacity=64)
    with TestClient(create_app(model_config(), engine), raise_server_exceptions=False) as client:
        for _ in range(100):  # the model loads in the background; 503 until then is by design
            if client.get("/health").status_code == 200:
                break
        reply = client.post(path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code < 500, (path, body, reply.status_code, reply.text)
    if reply.status_code >= 400:
        assert "error" in reply.json()
