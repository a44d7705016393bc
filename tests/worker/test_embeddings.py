"""Mean pooling, and all-MiniLM-L6-v2 through a real worker."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import openai
import pytest
from tests.worker.support import RealWorker

from corral.worker.embeddings import mean_pool

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
]


def test_mean_pool_ignores_padding_and_normalizes() -> None:
    hidden = np.array(
        [[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]], [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]], np.float32
    )
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    np.testing.assert_allclose(pooled, [[1.0, 0.0], [0.0, 1.0]], atol=1e-6)
    assert pooled.dtype == np.float32


def embed(url: str, **args: Any) -> Any:
    api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    return api.embeddings.create(model="minilm-l6-v2", **args)


@pytest.mark.slow
def test_minilm_vectors_are_384_dims_unit_norm_and_meaningful(minilm: RealWorker) -> None:
    reply = embed(minilm.url, input=SENTENCES)
    vectors = np.array([d.embedding for d in reply.data])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    food, bread, baby = vectors
    assert food @ bread > food @ baby + 0.3
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 3 * 5


@pytest.mark.slow
def test_base64_matches_floats_and_token_ids_match_text(minilm: RealWorker) -> None:
    floats = np.array(embed(minilm.url, input=SENTENCES[0]).data[0].embedding)
    raw = embed(minilm.url, input=SENTENCES[0], encoding_format="base64").data[0].embedding
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(raw), "<f4"), floats, atol=1e-7)
    ids = asyncio.run(minilm.engine.tokenize(SENTENCES[0]))
    by_ids = np.array(embed(minilm.url, input=ids).data[0].embedding)
    np.testing.assert_allclose(by_ids, floats, atol=1e-5)


@pytest.mark.slow
def test_long_inputs_are_truncated_to_the_context(minilm: RealWorker) -> None:
    long_text = "word " * 1000
    reply = embed(minilm.url, input=[long_text, "short"])
    assert reply.usage.prompt_tokens == 256 + 3  # [CLS] short [SEP]
    assert len(reply.data) == 2


@pytest.mark.slow
async def test_concurrent_requests_share_batches_and_each_get_their_own_rows(
    minilm: RealWorker,
) -> None:
    engine = minilm.engine
    inputs = [[f"sentence number {i}", SENTENCES[i % 3]] for i in range(12)]
    results = await asyncio.gather(*(engine.embed(pair) for pair in inputs))
    alone = await engine.embed(inputs[5])
    np.testing.assert_allclose(results[5].vectors, alone.vectors, atol=1e-5)
    assert [r.vectors.shape for r in results] == [(2, 384)] * 12
