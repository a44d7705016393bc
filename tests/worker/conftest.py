"""Fixtures of the worker's tests; the fakes and helpers live in support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.worker.support import FakeEmbeddingEngine, FakeTextEngine, RealWorker, real_worker


@pytest.fixture
def fake_engine() -> FakeTextEngine:
    return FakeTextEngine()


@pytest.fixture
def fake_embedder() -> FakeEmbeddingEngine:
    return FakeEmbeddingEngine()


@pytest.fixture(scope="module")
def smollm2() -> Iterator[RealWorker]:
    """SmolLM2-135M-Instruct (chat) served by a real worker on 127.0.0.1, once per module."""
    yield from real_worker(
        {
            "name": "smollm2-135m-instruct",
            "aliases": ["smol"],
            "task": "chat",
            "engine": "llamacpp",
            "source": "smollm2-135m-instruct",
            "threads": 2,
            "context_length": 2048,
            "queue_size": 4,
        }
    )


@pytest.fixture(scope="module")
def gemma3() -> Iterator[RealWorker]:
    """Gemma 3 270M (base model: completion only), once per module."""
    yield from real_worker(
        {
            "name": "gemma3-270m",
            "task": "completion",
            "engine": "llamacpp",
            "source": "gemma3-270m",
            "threads": 2,
            "context_length": 1024,
        }
    )


@pytest.fixture(scope="module")
def minilm() -> Iterator[RealWorker]:
    """all-MiniLM-L6-v2 (int8 ONNX) embeddings, once per module."""
    yield from real_worker(
        {
            "name": "minilm-l6-v2",
            "task": "embedding",
            "engine": "onnx-embed",
            "source": "minilm-l6-v2",
            "threads": 2,
            "context_length": 256,
            "batch_size": 8,
        }
    )
