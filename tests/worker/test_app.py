"""The worker's HTTP behaviour, over real HTTP (uvicorn on 127.0.0.1), with fake engines."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from tests.worker.support import (
    FakeEmbeddingEngine,
    FakeTextEngine,
    model_config,
    running,
    wait_until,
)

from corral.errors import ModelSourceError
from corral.worker.app import create_app

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "say hello"}]}


async def post(url: str, payload: Any, **kwargs: Any) -> tuple[int, Any, Any]:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, **kwargs) as response,
    ):
        return response.status, await response.json(content_type=None), response.headers


def sse_payloads(body: str) -> list[Any]:
    frames = [frame.removeprefix("data: ") for frame in body.split("\n\n") if frame]
    return [frame if frame == "[DONE]" else orjson.loads(frame) for frame in frames]


async def stream_body(url: str, payload: dict[str, Any]) -> list[Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=payload) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_payloads(await response.text())


async def test_health_is_503_loading_until_the_model_is_loaded(fake_engine: FakeTextEngine) -> None:
    fake_engine.load_gate = asyncio.Event()
    async with (
        running(create_app(model_config(), fake_engine)) as url,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{url}/health") as response:
            assert (response.status, await response.json()) == (503, {"status": "loading"})
        status, body, headers = await post(f"{url}/v1/chat/completions", CHAT)
        assert status == 503 and headers["Retry-After"] == "1"
        assert "still loading" in body["error"]["message"]
        fake_engine.load_gate.set()
        await wait_until(lambda: fake_engine.loaded)
        async with session.get(f"{url}/health") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
    assert fake_engine.closed


async def test_a_failed_load_is_reported(fake_engine: FakeTextEngine) -> None:
    failures: list[BaseException] = []

    fake_engine.load_error = ModelSourceError("no weights here")
    app = create_app(model_config(), fake_engine, on_load_failure=failures.append)
    async with running(app) as url, aiohttp.ClientSession() as session:
        await wait_until(lambda: failures)
        async with session.get(f"{url}/health") as response:
            assert response.status == 503
            assert await response.json() == {"status": "failed", "error": "no weights here"}
    assert isinstance(failures[0], ModelSourceError)


async def test_chat_completion(fake_engine: FakeTextEngine) -> None:
    async with running(create_app(model_config(), fake_engine)) as url:
        status, body, _ = await post(
            f"{url}/v1/chat/completions", {**CHAT, "model": "alias", "seed": 3}
        )
    assert status == 200
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "test-model"
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": "Hello, world!"},
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 4,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    assert fake_engine.params[0].seed == 3


async def test_text_completion_on_a_chat_model(fake_engine: FakeTextEngine) -> None:
    async with running(create_app(model_config(), fake_engine)) as url:
        status, body, _ = await post(
            f"{url}/v1/completions", {"model": "test-model", "prompt": "a b c", "max_tokens": 2}
        )
    assert status == 200
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Hello,"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == 3


@pytest.mark.parametrize(
    ("task", "engine", "path", "payload"),
    [
        ("completion", "llamacpp", "/v1/chat/completions", CHAT),
        ("chat", "llamacpp", "/v1/embeddings", {"model": "test-model", "input": "x"}),
        ("embedding", "onnx-embed", "/v1/chat/completions", CHAT),
        ("embedding", "onnx-embed", "/v1/completions", {"model": "test-model", "prompt": "x"}),
    ],
)
async def test_endpoints_the_task_cannot_answer_are_400(
    task: str,
    engine: str,
    path: str,
    payload: dict[str, Any],
    fake_engine: FakeTextEngine,
    fake_embedder: FakeEmbeddingEngine,
) -> None:
    impl: FakeTextEngine | FakeEmbeddingEngine = (
        fake_embedder if task == "embedding" else fake_engine
    )
    async with running(create_app(model_config(task, engine), impl)) as url:
        await wait_until(lambda: impl.loaded)
        status, body, _ = await post(url + path, payload)
    assert status == 400
    assert body["error"]["code"] == "wrong_task"
    assert f"serves task '{task}'" in body["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        ({**CHAT, "model": "nope"}, 404, "model_not_found", "model"),
        ({**CHAT, "temperature": "warm"}, 400, 400, "temperature"),
        ({**CHAT, "n": 3}, 400, "unsupported_parameter", "n"),
        (
            {**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]},
            400,
            "unsupported_parameter",
            "tools",
        ),
        ({**CHAT, "max_tokens": 100}, 400, "context_length_exceeded", "messages"),
        ({**CHAT, "messages": [{"role": "user", "content": "raise"}]}, 400, 400, "messages"),
    ],
)
async def test_errors_have_openai_shape(
    payload: Any, status: int, code: object, param: str | None, fake_engine: FakeTextEngine
) -> None:
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        got_status, body, headers = await post(f"{url}/v1/chat/completions", payload)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["code"], body["error"]["param"]) == (code, param)


async def test_unknown_paths_and_methods_have_openai_shape(fake_engine: FakeTextEngine) -> None:
    async with (
        running(create_app(model_config(), fake_engine)) as url,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{url}/v2/nothing") as response:
            assert response.status == 404
            assert (await response.json())["error"]["type"] == "not_found_error"
        async with session.get(f"{url}/v1/chat/completions") as response:
            assert response.status == 405
            assert (await response.json())["error"]["code"] == 405


async def test_a_full_queue_is_503_with_retry_after(fake_engine: FakeTextEngine) -> None:
    fake_engine.capacity, fake_engine.delay_s = 1, 0.05
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        first = asyncio.create_task(post(f"{url}/v1/chat/completions", CHAT))
        await wait_until(lambda: fake_engine.started)
        status, body, headers = await post(f"{url}/v1/chat/completions", CHAT)
        assert (status, headers["Retry-After"], body["error"]["type"]) == (
            503,
            "2",
            "overloaded_error",
        )
        assert (await first)[0] == 200


async def test_chat_stream_chunks(fake_engine: FakeTextEngine) -> None:
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        payloads = await stream_body(f"{url}/v1/chat/completions", {**CHAT, "stream": True})
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello, world!"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert all("usage" not in c for c in chunks)


async def test_include_usage_adds_a_last_chunk_with_usage(fake_engine: FakeTextEngine) -> None:
    payload = {
        "model": "test-model",
        "prompt": "a b",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        payloads = await stream_body(f"{url}/v1/completions", payload)
    assert payloads[-1] == "[DONE]"
    usage_chunk, finish_chunk = payloads[-2], payloads[-3]
    assert usage_chunk["choices"] == []
    assert (
        usage_chunk["usage"]["prompt_tokens"] == 2
        and usage_chunk["usage"]["completion_tokens"] == 4
    )
    assert finish_chunk["choices"][0]["finish_reason"] == "stop"
    assert "".join(p["choices"][0]["text"] for p in payloads[:-2]) == "Hello, world!"


async def test_an_error_after_the_stream_started_is_an_error_frame(
    fake_engine: FakeTextEngine,
) -> None:
    fake_engine.fail_after = 2
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        payloads = await stream_body(f"{url}/v1/chat/completions", {**CHAT, "stream": True})
    assert "[DONE]" not in payloads
    assert payloads[-1] == {
        "error": {
            "message": "the fake engine broke",
            "type": "server_error",
            "param": None,
            "code": 500,
        }
    }
    assert [p["choices"][0]["delta"].get("content") for p in payloads[1:-1]] == ["Hello", ","]


async def test_a_client_leaving_a_stream_cancels_generation(fake_engine: FakeTextEngine) -> None:
    fake_engine.script, fake_engine.delay_s = tuple(f" w{i}" for i in range(200)), 0.01
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{url}/v1/chat/completions", json={**CHAT, "stream": True}
            )
            await response.content.readuntil(b"\n\n")  # the role chunk
            await response.content.readuntil(b"\n\n")  # one token
            response.close()
        await wait_until(lambda: fake_engine.cancelled)
    stream = fake_engine.started[0]
    assert fake_engine.cancelled == [stream] and stream.cancelled


async def test_a_client_leaving_a_plain_request_cancels_generation(
    fake_engine: FakeTextEngine,
) -> None:
    fake_engine.script, fake_engine.delay_s = tuple(f" w{i}" for i in range(200)), 0.01
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        request = asyncio.create_task(post(f"{url}/v1/chat/completions", CHAT))
        await asyncio.wait_for(fake_engine.first_token.wait(), 2)
        request.cancel()
        await wait_until(lambda: fake_engine.cancelled)
    assert fake_engine.started[0].cancelled


async def test_tokenize_and_detokenize_in_vllm_shape(fake_engine: FakeTextEngine) -> None:
    async with running(create_app(model_config(), fake_engine)) as url:
        await wait_until(lambda: fake_engine.loaded)
        status, body, _ = await post(f"{url}/tokenize", {"model": "alias", "prompt": "ab cde"})
        assert (status, body) == (200, {"tokens": [2, 3], "count": 2, "max_model_len": 64})
        status, body, _ = await post(
            f"{url}/tokenize", {"messages": [{"role": "user", "content": "a b c"}]}
        )
        assert body["count"] == 3
        status, body, _ = await post(f"{url}/detokenize", {"tokens": [1, 2]})
        assert (status, body) == (200, {"prompt": "x xx"})
        status, body, _ = await post(f"{url}/tokenize", {"model": "other", "prompt": "x"})
        assert status == 404


async def test_models_lists_the_name_and_aliases(fake_engine: FakeTextEngine) -> None:
    async with (
        running(create_app(model_config(), fake_engine)) as url,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{url}/v1/models") as response:
            body = await response.json()
    assert [m["id"] for m in body["data"]] == ["test-model", "alias"]
    assert {m["root"] for m in body["data"]} == {"test-model"}


async def test_embeddings_as_floats_and_base64(fake_embedder: FakeEmbeddingEngine) -> None:
    app = create_app(model_config("embedding", "onnx-embed"), fake_embedder)
    payload = {"model": "test-model", "input": ["ab", "abc"]}
    async with running(app) as url:
        await wait_until(lambda: fake_embedder.loaded)
        status, floats, _ = await post(f"{url}/v1/embeddings", payload)
        _, b64, _ = await post(f"{url}/v1/embeddings", {**payload, "encoding_format": "base64"})
        bad_status, bad, _ = await post(f"{url}/v1/embeddings", {**payload, "dimensions": 2})
    assert status == 200
    assert floats["object"] == "list" and floats["model"] == "test-model"
    assert [d["embedding"] for d in floats["data"]] == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4").tolist() for d in b64["data"]]
    assert decoded == [d["embedding"] for d in floats["data"]]
    assert (bad_status, bad["error"]["param"]) == (400, "dimensions")
