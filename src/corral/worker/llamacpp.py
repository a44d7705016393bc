"""llama.cpp in this process, through llama-cpp-python: one ``Llama``, one thread.

The ``Llama`` object is loaded once and only ever touched by the engine's own thread,
which takes requests from a :class:`~corral.worker.admission.BoundedFifo` and runs
them one sequence at a time. It drives ``Llama.generate()`` token by token, so that:

- token counts are exact (usage counts every sampled token, the end-of-generation
  token included, as vLLM does);
- a cancelled request stops at the next token;
- text is detokenized incrementally (no broken UTF-8) and stop strings are held back;
- llama-cpp-python's reuse of the longest common prefix with the previous sequence
  (``generate(reset=True)`` keeps the KV cache up to the first differing token) is
  kept: a repeated system prompt or conversation is not evaluated again. Beyond the
  last prompt, a RAM store keeps the KV of earlier prompts' prefixes, so users
  interleaved on one worker do not evict each other (:mod:`corral.worker.prefix_cache`),
  and, when the stack's ``cache`` asks for them, a disk and a Redis tier keep more and
  share it between workers (:mod:`corral.worker.kvstore`).
  The number of reused tokens, store hits included, is reported as
  ``usage.prompt_tokens_details.cached_tokens``;
- the blocks of prefix KV the worker holds are published as KV events
  (:mod:`corral.worker.kv_events`) for a router to route by.

Tokenization and chat-template rendering only read the vocabulary, so they run on
the default executor and never wait behind a generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as llama_lib
from llama_cpp import Llama

from corral.config import CacheConfig, ModelConfig, PrefixConfig, SupervisorConfig
from corral.errors import (
    APIError,
    ContextLengthError,
    InvalidRequestError,
    ModelSourceError,
    OverloadedError,
)
from corral.sources import ModelFiles, resolve_source
from corral.worker.admission import BoundedFifo
from corral.worker.chat_template import ChatTemplate
from corral.worker.detokenize import IncrementalDetokenizer
from corral.worker.engine import ChatPrompt, Prompt, SamplingParams
from corral.worker.engine_thread import EngineThread
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.settings import TierPlaces, open_tiers
from corral.worker.llama_model import LlamaVocab, check_ids, load_llama
from corral.worker.prefix_cache import PrefixCache
from corral.worker.prefix_store import PrefixStats
from corral.worker.stops import StopMatcher
from corral.worker.streams import FinishReason, TokenStream

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 30.0


def _llama_seed(seed: int | None) -> int:
    if seed is None:
        return llama_lib.LLAMA_DEFAULT_SEED  # llama.cpp draws a random seed
    value = seed % 2**32
    return value - 1 if value == llama_lib.LLAMA_DEFAULT_SEED else value


def _sampler_kwargs(params: SamplingParams) -> dict[str, Any]:
    return {
        "temp": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "typical_p": 1.0,
        "repeat_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "reset": True,
    }


class _TextSink:
    """Generated tokens -> complete text, minus stop strings -> the stream."""

    def __init__(
        self, stream: TokenStream, piece: Callable[[int], bytes], stops: Sequence[str]
    ) -> None:
        self._stream = stream
        self._detokenizer = IncrementalDetokenizer(piece)
        self._stops = StopMatcher(stops)
        self.stopped = False

    def add(self, token: int) -> bool:
        """Emit what ``token`` completes; True when a stop string was reached."""
        text, self.stopped = self._stops.push(self._detokenizer.push(token))
        if text:
            self._stream.push(text)
        return self.stopped

    def close(self) -> None:
        """Generation ended without a stop string: release what was held back."""
        if self.stopped:
            return
        text, stopped = self._stops.push(self._detokenizer.flush())
        text += "" if stopped else self._stops.flush()
        if text:
            self._stream.push(text)


@dataclass(eq=False, slots=True)
class _Job:
    stream: TokenStream
    prompt: list[int]
    params: SamplingParams
    max_tokens: int


class LlamaCppEngine:
    """A :class:`~corral.worker.engine.TextEngine` for one GGUF model."""

    def __init__(
        self,
        model: ModelConfig,
        *,
        files: ModelFiles | None = None,
        prefix: PrefixConfig | None = None,
        cache: CacheConfig | None = None,
        places: TierPlaces | None = None,
        sync_store: bool = False,
    ) -> None:
        """``places``: where the disk and Redis tiers of ``cache`` live (run directory, Redis
        URL; ConfigError if ``cache`` asks for Redis without a URL). ``sync_store``: write
        the KV to the lower tiers before a response ends, not in the background (a prefill
        worker, whose decode worker loads it next)."""
        self._model = model
        self._files = files
        self._block_size = (prefix or PrefixConfig()).block_size
        self._cache = cache or CacheConfig()
        self._places = places or TierPlaces(Path(SupervisorConfig().run_dir))
        self._places.check(self._cache)
        self._sync_store = sync_store
        self._events = KVEventLog(block_size=self._block_size)
        self._prefix = PrefixCache(
            model=model.name,
            block_size=self._block_size,
            config=self._cache,
            events=self._events,
        )
        self._queue: BoundedFifo[_Job] = BoundedFifo(model.queue_size)
        self._thread = EngineThread(f"llamacpp:{model.name}", load=self._load, serve=self._serve)
        self._current: _Job | None = None
        self._llama: Llama | None = None
        self._vocab: LlamaVocab | None = None
        self._template: ChatTemplate | None = None

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def context_length(self) -> int:
        return self._model.context_length

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def kv_events(self) -> KVEventLog:
        """The prefix blocks this engine holds, as events (thread-safe)."""
        return self._events

    @property
    def prefix_stats(self) -> PrefixStats:
        """The RAM store's stats, with every tier's in ``tiers`` (any thread)."""
        return self._prefix.snapshot()

    def flush_kv_writes(self, timeout_s: float) -> bool:
        """Wait until the background writes to the lower tiers are done (tests, benchmarks)."""
        return self._prefix.flush(timeout_s)

    @property
    def llama(self) -> Llama | None:
        """The loaded model, for inspection (tests, benchmarks); only the engine thread runs it."""
        return self._llama

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self._thread.start()

    async def aclose(self) -> None:
        for job in self._queue.close():
            job.stream.fail(OverloadedError("the worker is shutting down"))
        current = self._current
        if current is not None:
            current.stream.cancelled = True
        if not await self._thread.join(_JOIN_TIMEOUT_S):
            logger.warning(
                "engine thread of %s did not stop; leaving the model loaded", self._model.name
            )
            return
        if self._llama is not None:
            await asyncio.to_thread(self._prefix.close)
            self._llama.close()
            self._llama = None

    def _serve(self) -> None:
        """Engine thread: take requests in order until the queue is closed."""
        while (job := self._queue.get()) is not None:
            self._current = job
            self._run(job)
            self._current = None

    def _load(self) -> None:
        model = self._model
        files = self._files or resolve_source(model.source, tokenizer=model.tokenizer)
        try:
            llama = load_llama(
                files.weights, context_length=model.context_length, threads=model.threads
            )
        except ValueError as exc:
            raise ModelSourceError(f"llama.cpp cannot load {files.weights}: {exc}") from exc
        vocab = LlamaVocab(llama)
        template = ChatTemplate.from_metadata(
            llama.metadata,
            bos_token=vocab.text(llama.token_bos()),
            eos_token=vocab.text(llama.token_eos()),
        )
        if model.task == "chat" and template is None:
            llama.close()
            raise ModelSourceError(
                f"model '{model.name}' has no chat template in {files.weights.name}; serve it with task: completion"
            )
        self._vocab, self._template = vocab, template
        self._open_tiers(llama, files.weights)
        self._llama = llama
        logger.info(
            "loaded %s (%s, n_ctx=%d, threads=%d)",
            model.name,
            files.weights.name,
            model.context_length,
            model.threads,
        )

    def _open_tiers(self, llama: Llama, weights: Path) -> None:
        """The disk and Redis tiers, once the context they must match exists."""
        try:
            tiers = open_tiers(
                self._cache,
                self._places,
                llama=llama,
                model_name=self._model.name,
                weights=weights,
                block_size=self._block_size,
                hashes=self._prefix.hashes,
                events=self._events,
            )
        except OSError as exc:
            logger.error("no disk or Redis KV tier for %s: %s", self._model.name, exc)
            return
        self._prefix.use_tiers(tiers)

    # -- tokenization (any thread) ----------------------------------------------------

    async def tokenize(self, prompt: Prompt, *, add_special_tokens: bool = True) -> list[int]:
        return await asyncio.to_thread(self._tokenize, prompt, add_special_tokens)

    async def detokenize(self, tokens: Sequence[int]) -> str:
        return await asyncio.to_thread(self._detokenize, list(tokens))

    def _tokenize(self, prompt: Prompt, add_special: bool) -> list[int]:
        llama, vocab = self._loaded()
        if isinstance(prompt, list):
            return check_ids(prompt, vocab.size)
        if isinstance(prompt, ChatPrompt):
            if self._template is None:
                raise InvalidRequestError(
                    f"model '{self._model.name}' has no chat template", param="messages"
                )
            text = self._template.render(
                prompt.messages, add_generation_prompt=prompt.add_generation_prompt
            )
            # The template writes the BOS token itself when the model wants one.
            add_special = add_special and not text.startswith(self._template.bos_token)
        else:
            text = prompt
        return llama.tokenize(
            text.encode("utf-8", errors="replace"), add_bos=add_special, special=True
        )

    def _detokenize(self, tokens: list[int]) -> str:
        llama, vocab = self._loaded()
        return llama.detokenize(check_ids(tokens, vocab.size), special=True).decode(
            "utf-8", errors="replace"
        )

    def _loaded(self) -> tuple[Llama, LlamaVocab]:
        if self._llama is None or self._vocab is None:
            raise OverloadedError(f"model '{self._model.name}' is still loading")
        return self._llama, self._vocab

    # -- generation -------------------------------------------------------------------

    def generate(self, prompt_tokens: list[int], params: SamplingParams) -> TokenStream:
        self._loaded()
        max_tokens = self._completion_budget(len(prompt_tokens), params.max_tokens)
        stream = TokenStream(len(prompt_tokens))
        job = _Job(stream, prompt_tokens, params, max_tokens)
        self._queue.put(job)

        def drop_if_waiting() -> None:
            self._queue.remove(job)

        stream.on_cancel(drop_if_waiting)
        return stream

    def _completion_budget(self, n_prompt: int, requested: int | None) -> int:
        n_ctx = self.context_length
        if n_prompt == 0:
            raise InvalidRequestError(
                "the prompt is empty: it must have at least one token", param="prompt"
            )
        if n_prompt >= n_ctx:
            raise ContextLengthError(
                f"this model's maximum context length is {n_ctx} tokens, but the prompt has {n_prompt} "
                "tokens, which leaves no room for a completion; shorten the prompt"
            )
        room = n_ctx - n_prompt
        if requested is not None and requested > room:
            raise ContextLengthError(
                f"this model's maximum context length is {n_ctx} tokens; the prompt has {n_prompt} tokens "
                f"and max_tokens is {requested} ({n_prompt + requested} in total); "
                f"lower max_tokens to at most {room} or shorten the prompt"
            )
        return room if requested is None else requested

    def _run(self, job: _Job) -> None:
        """Engine thread: one generation, start to end; an error fails only this request."""
        if job.stream.cancelled:
            return
        failure: Exception | None = None
        try:
            reason, count, cached = self._generate(job)
        except Exception as exc:
            logger.exception("generation failed on %s", self._model.name)
            if self._llama is not None:
                self._llama.reset()  # type: ignore[no-untyped-call]  # KV cache vs input_ids
            failure = exc
        if self._sync_store:
            self._remember()  # the KV is in the lower tiers before the response ends
        elif failure is None and self._llama is not None:
            self._prefix.publish_context(self._llama)  # the router knows before the client
        if failure is not None:
            job.stream.fail(APIError(f"generation failed: {failure}"))
        else:
            job.stream.finish(reason, count, cached)
        if not self._sync_store:
            self._remember()

    def _remember(self) -> None:
        """Store what the context evaluated, report the blocks held."""
        if self._llama is None:
            return
        try:
            self._prefix.remember(self._llama, sync=self._sync_store)
        except Exception:
            logger.exception("could not keep the prompt prefix on %s", self._model.name)

    def _generate(self, job: _Job) -> tuple[FinishReason | None, int, int]:
        llama, vocab = self._loaded()
        cached = self._prefix.prepare(llama, job.prompt)
        sink = _TextSink(job.stream, vocab.piece, job.params.stop)
        reason, count = self._sample(llama, vocab, job, sink)
        sink.close()
        return reason, count, cached

    def _sample(
        self, llama: Llama, vocab: LlamaVocab, job: _Job, sink: _TextSink
    ) -> tuple[FinishReason | None, int]:
        params = job.params
        llama.set_seed(_llama_seed(params.seed))
        tokens = llama.generate(job.prompt, **_sampler_kwargs(params))
        count = 0
        try:
            for token in tokens:
                count += 1
                if (not params.ignore_eos and vocab.is_eog(token)) or sink.add(token):
                    return "stop", count
                if count >= job.max_tokens:
                    return "length", count
                if job.stream.cancelled:
                    return None, count
        finally:
            tokens.close()
        return "length", count
