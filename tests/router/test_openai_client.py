"""The official ``openai`` client against the router (real sockets, fake engines)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from tests.fakes.engine import Behaviour, FakeEngine
from tests.router.support import make_stack, serving, serving_router


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    chat, embed = FakeEngine("w1", behaviour=Behaviour(itl_s=0.001, tokens=5)), FakeEngine("e1")
    async with serving(chat, embed) as (chat_url, embed_url):
        async with serving_router(make_stack([chat_url], [embed_url])) as (router, _):
            client = openai.AsyncOpenAI(base_url=router + "/v1", api_key="sk-test", max_retries=0)
            try:
                yield client
            finally:
                await client.close()
    assert all(
        r.headers["authorization"] == "Bearer sk-test" for r in [*chat.records, *embed.records]
    )


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert sorted(models) == ["chat", "chat-model", "embed", "embed-model"]


async def test_chat_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == "".join(f"w1#1:{i} " for i in range(5))
    assert usage is not None and usage.completion_tokens == 5


async def test_completion(client: openai.AsyncOpenAI) -> None:
    completion = await client.completions.create(model="chat-model", prompt="once", max_tokens=3)
    assert completion.choices[0].text == "w1#1:0 w1#1:1 w1#1:2 "


async def test_embeddings_base64_and_float(client: openai.AsyncOpenAI) -> None:
    embedded = await client.embeddings.create(model="embed", input=["a", "b"])  # base64 on the wire
    assert [len(item.embedding) for item in embedded.data] == [8, 8]
    floats = await client.embeddings.create(model="embed", input="a", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(embedded.data[0].embedding, abs=1e-6)


async def test_errors_map_to_the_clients_exceptions(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.chat.completions.create(model="gpt-9", messages=[])
    with pytest.raises(openai.BadRequestError, match="cannot answer"):
        await client.chat.completions.create(model="embed", messages=[])
