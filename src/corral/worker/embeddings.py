"""Sentence embeddings with onnxruntime and a Hugging Face ``tokenizer.json``.

A BERT-style encoder (all-MiniLM-L6-v2 by default) gives one vector per token; the
sentence vector is their mean over the attention mask, L2-normalized — what
sentence-transformers does for these models. Inputs are truncated to the model's
``context_length`` tokens.

Requests wait in a bounded FIFO for the engine's one thread, which takes the request
at the head and, behind it, as many waiting requests as fit in ``batch_size`` inputs,
so concurrent small requests share one forward pass (micro-batching).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from corral.config import ModelConfig
from corral.errors import InvalidRequestError, ModelSourceError, OverloadedError
from corral.sources import ModelFiles, resolve_source
from corral.worker.admission import BoundedFifo
from corral.worker.engine import ChatPrompt, Embeddings, Prompt
from corral.worker.engine_thread import EngineThread, settle_threadsafe

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 30.0


def mean_pool(
    hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Mean of the token vectors where ``mask`` is 1, then L2-normalized: (batch, dim)."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    return normalize(summed / counts)


def normalize(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(
        np.float32, copy=False
    )
    return unit


@dataclass(eq=False)
class _Job:
    inputs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Embeddings]
    cancelled: bool = field(default=False)


class OnnxEmbeddingEngine:
    """An :class:`~corral.worker.engine.EmbeddingEngine` for one ONNX encoder."""

    def __init__(self, model: ModelConfig, *, files: ModelFiles | None = None) -> None:
        self._model = model
        self._files = files
        self._queue: BoundedFifo[_Job] = BoundedFifo(model.queue_size)
        self._thread = EngineThread(f"onnx-embed:{model.name}", load=self._load, serve=self._serve)
        self._session: ort.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._input_names: frozenset[str] = frozenset()
        self._dimensions = 0

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def context_length(self) -> int:
        return self._model.context_length

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self._thread.start()

    async def aclose(self) -> None:
        for job in self._queue.close():
            settle_threadsafe(
                job.loop, job.future, error=OverloadedError("the worker is shutting down")
            )
        if not await self._thread.join(_JOIN_TIMEOUT_S):
            logger.warning("engine thread of %s did not stop", self._model.name)
        self._session = None

    def _load(self) -> None:
        model = self._model
        files = self._files or resolve_source(model.source, tokenizer=model.tokenizer)
        if files.tokenizer is None:
            raise ModelSourceError(
                f"model '{model.name}' needs a tokenizer.json (set 'tokenizer' in the stack file)"
            )
        tokenizer = Tokenizer.from_file(str(files.tokenizer))
        tokenizer.enable_truncation(model.context_length)
        tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = model.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(files.weights), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelSourceError(f"onnxruntime cannot load {files.weights}: {exc}") from exc
        self._input_names = frozenset(i.name for i in session.get_inputs())
        self._tokenizer = tokenizer
        self._dimensions = int(session.get_outputs()[0].shape[-1])
        self._session = session
        logger.info(
            "loaded %s (%s, %d dims, threads=%d)",
            model.name,
            files.weights.name,
            self._dimensions,
            model.threads,
        )

    # -- tokenization ----------------------------------------------------------------

    async def tokenize(self, prompt: Prompt, *, add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, ChatPrompt):
            raise InvalidRequestError(
                "an embedding model tokenizes 'prompt' text, not 'messages'", param="messages"
            )
        if isinstance(prompt, list):
            return self._check_ids(prompt)
        tokenizer = self._loaded_tokenizer()
        encoding = await asyncio.to_thread(
            tokenizer.encode, prompt, add_special_tokens=add_special_tokens
        )
        return list(encoding.ids)

    async def detokenize(self, tokens: Sequence[int]) -> str:
        tokenizer = self._loaded_tokenizer()
        ids = self._check_ids(list(tokens))
        return await asyncio.to_thread(tokenizer.decode, ids, skip_special_tokens=False)

    def _loaded_tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise OverloadedError(f"model '{self._model.name}' is still loading")
        return self._tokenizer

    def _check_ids(self, tokens: list[int]) -> list[int]:
        size = self._loaded_tokenizer().get_vocab_size()
        for token in tokens:
            if not 0 <= token < size:
                raise InvalidRequestError(
                    f"token id {token} is outside the vocabulary (0 to {size - 1})", param="input"
                )
        return tokens

    # -- embedding -------------------------------------------------------------------

    async def embed(self, inputs: Sequence[str | list[int]]) -> Embeddings:
        ids = await self._encode(inputs)
        loop = asyncio.get_running_loop()
        job = _Job(ids, loop, loop.create_future())
        self._queue.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True
            self._queue.remove(job)
            raise

    async def _encode(self, inputs: Sequence[str | list[int]]) -> list[list[int]]:
        """Token ids per input, truncated to the context; texts are tokenized off the loop."""
        tokenizer = self._loaded_tokenizer()
        texts = [item for item in inputs if isinstance(item, str)]
        encodings = await asyncio.to_thread(tokenizer.encode_batch, texts) if texts else []
        from_texts = (list(encoding.ids) for encoding in encodings)
        ids: list[list[int]] = []
        for item in inputs:
            if isinstance(item, str):
                ids.append(next(from_texts))
            elif not item:
                raise InvalidRequestError("'input' has an empty list of token ids", param="input")
            else:
                ids.append(self._check_ids(item)[: self.context_length])
        return ids

    def _serve(self) -> None:
        """Engine thread: run waiting requests together, up to batch_size inputs at a time."""
        batch_size = self._model.batch_size
        while jobs := self._queue.get_many(batch_size, lambda job: len(job.inputs)):
            jobs = [job for job in jobs if not job.cancelled]
            try:
                vectors = self._run([ids for job in jobs for ids in job.inputs])
            except Exception as exc:
                logger.exception("embedding failed on %s", self._model.name)
                for job in jobs:
                    settle_threadsafe(job.loop, job.future, error=exc)
                continue
            start = 0
            for job in jobs:
                end = start + len(job.inputs)
                result = Embeddings(vectors[start:end], sum(len(ids) for ids in job.inputs))
                settle_threadsafe(job.loop, job.future, result)
                start = end

    def _run(self, inputs: list[list[int]]) -> npt.NDArray[np.float32]:
        """Forward passes of at most batch_size inputs each, padded to their longest."""
        session = self._session
        if session is None:
            raise OverloadedError(f"model '{self._model.name}' is not loaded")
        size = self._model.batch_size
        parts = [self._forward(session, inputs[i : i + size]) for i in range(0, len(inputs), size)]
        return np.concatenate(parts) if parts else np.zeros((0, self._dimensions), np.float32)

    def _forward(
        self, session: ort.InferenceSession, batch: list[list[int]]
    ) -> npt.NDArray[np.float32]:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feed = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        output = session.run(None, {name: feed[name] for name in self._input_names})[0]
        return mean_pool(output, mask) if output.ndim == 3 else normalize(output)
