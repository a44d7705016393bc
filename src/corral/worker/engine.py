"""The contract between the worker's HTTP app and the engine that hosts one model.

The app speaks OpenAI; an engine only knows token ids, sampling parameters and
vectors. Every engine owns one model and runs its calls off the event loop.

    Engine            lifecycle (start, aclose, loaded) and tokenization
    ├── TextEngine        generate(prompt_tokens, params) -> TokenStream    (llama.cpp)
    │   └── PrefixCachingEngine   kv_events, prefix_stats: the prefix KV it holds
    └── EmbeddingEngine   embed(inputs) -> Embeddings                       (onnxruntime)

Contract of ``generate``: it checks the request against the context and admits it
to the engine's bounded queue *synchronously*, so a ContextLengthError or an
OverloadedError is raised before any response is started; it then returns a
:class:`~corral.worker.streams.TokenStream` that yields text as it is produced.
Cancelling the stream stops generation at the next token, or drops the request
if it is still queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from corral.worker.kv_events import KVEventLog
from corral.worker.prefix_store import PrefixStats
from corral.worker.streams import TokenStream


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """Chat messages, rendered by the model's chat template before tokenization."""

    messages: tuple[dict[str, str], ...]
    add_generation_prompt: bool = True


#: What can be tokenized: plain text, chat messages, or ids that only need checking.
Prompt = str | ChatPrompt | list[int]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample one completion. ``None`` means "the engine's default"."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


class Embeddings(NamedTuple):
    """One row per input, L2-normalized, and the number of tokens that were embedded."""

    vectors: npt.NDArray[np.float32]
    prompt_tokens: int


@runtime_checkable
class Engine(Protocol):
    """One model, loaded once and kept in this process."""

    @property
    def loaded(self) -> bool:
        """True once :meth:`start` has finished loading the model."""
        ...

    @property
    def context_length(self) -> int:
        """The most tokens one sequence may hold (prompt and completion together)."""
        ...

    async def start(self) -> None:
        """Load the model without blocking the event loop; raise ModelSourceError on failure."""
        ...

    async def aclose(self) -> None:
        """Stop the engine's thread, fail what is still queued, free the model."""
        ...

    async def tokenize(self, prompt: Prompt, *, add_special_tokens: bool = True) -> list[int]:
        """The exact ids a request with this prompt is run on (InvalidRequestError if unusable)."""
        ...

    async def detokenize(self, tokens: Sequence[int]) -> str: ...


@runtime_checkable
class TextEngine(Engine, Protocol):
    def generate(self, prompt_tokens: list[int], params: SamplingParams) -> TokenStream:
        """Admit one generation (see the module docstring for what is raised when)."""
        ...


@runtime_checkable
class PrefixCachingEngine(TextEngine, Protocol):
    """A text engine that keeps prefix KV beyond its last prompt and says which blocks."""

    @property
    def kv_events(self) -> KVEventLog:
        """The blocks it holds, as KV events (thread-safe; see corral.prefix.events)."""
        ...

    @property
    def prefix_stats(self) -> PrefixStats: ...


@runtime_checkable
class EmbeddingEngine(Engine, Protocol):
    @property
    def dimensions(self) -> int: ...

    async def embed(self, inputs: Sequence[str | list[int]]) -> Embeddings:
        """Embed texts or token id lists; raises OverloadedError when the queue is full."""
        ...
