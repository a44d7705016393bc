"""Prompts too long for the model's context, refused by the router before any worker.

    prompt tokens + (max_tokens or 1) > context_length   ->   400 context_length_exceeded

(the worker's own rule: without ``max_tokens`` it needs room for one token). Cheap rule
first: llama.cpp never cuts a text into more tokens than it has UTF-8 bytes, plus the few
it adds itself (BOS, EOS, SentencePiece's leading space: :data:`ADDED_TOKENS`). The prompt is
cut into the pieces the worker's tokenization is exact over
(:class:`~corral.prefix.tokenizer.PromptTokenizer`: the model's chat template, the same
vocabulary and flags); pieces seen before count their cached tokens, new ones their bytes,
and only when that bound does not fit are the new pieces tokenized, on a thread of this
checker, off the event loop. A long conversation thus costs its new turn, not its whole
history, per request (tokenizing is ~2 us per token: 8,000 characters would be ~3 ms).
Before any of that, a chat prompt whose message bytes plus what the template can add
(:func:`template_bytes`, measured at startup) fit is not even rendered (~40 us saved); nor
is one whose rendered messages seen before (cached whole, with their tokens) and the
bytes of the others fit (``PromptTokenizer.most_tokens``: a long conversation's new turn).

Only llama.cpp models have a tokenizer at the router: those routed by ``kv`` share the
routing service's; the others load their vocabulary at startup (a vocabulary-only read).
Where there is none (vLLM endpoints, embeddings, a source the router cannot read) the
worker decides, as it always does anyway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from corral.config import ModelConfig
from corral.errors import ContextLengthError, InvalidRequestError, ModelSourceError
from corral.prefix.prompt import ChatPrompt, TextPrompt, TokenPrompt, read_prompt
from corral.sources import resolve_source

if TYPE_CHECKING:
    from corral.prefix.segments import Plan
    from corral.prefix.tokenizer import PromptTokenizer

logger = logging.getLogger(__name__)

#: Tokens llama.cpp may add to a text beyond one per byte: BOS, EOS, a leading space.
ADDED_TOKENS = 4
_PATHS = ("/v1/chat/completions", "/v1/completions")


class PromptLengthCheck:
    """Checks prompt + max_tokens against each llama.cpp model's context (:meth:`check`).

    :meth:`start` finds the tokenizers; :meth:`aclose` stops the thread and closes the
    vocabularies it loaded (not the shared ones, whose owner closes them after this)."""

    def __init__(self, models: Iterable[ModelConfig], *, cache_bytes: int = 16 * 1024 * 1024) -> None:
        self._cache_bytes = cache_bytes
        self._models = [m for m in models if m.engine == "llamacpp" and m.task in ("chat", "completion")]
        self._tokenizers: dict[str, PromptTokenizer] = {}
        self._owned: list[PromptTokenizer] = []
        self._shared: set[str] = set()  # models whose plan the kv policy takes over
        self._executor: ThreadPoolExecutor | None = None
        #: id(tokenizer) -> what its chat template adds: (fixed bytes, bytes per message).
        self._template_bytes: dict[int, tuple[int, int]] = {}

    def covers(self, model: str) -> bool:
        """Whether prompts of ``model`` are checked here (it has a tokenizer)."""
        return model in self._tokenizers

    async def start(self, shared: Mapping[str, PromptTokenizer]) -> None:
        """Use ``shared`` tokenizers (model name -> tokenizer); load the other models' vocabularies."""
        to_load = []
        for model in self._models:
            if model.name in shared:
                self._tokenizers[model.name] = shared[model.name]
                self._shared.add(model.name)
                continue
            try:
                resolve_source(model.source)  # cheap: is there a file to read?
            except ModelSourceError as exc:
                logger.info("model %s: prompt lengths are left to its workers (%s)", model.name, exc)
                continue
            to_load.append(model)
        if not (to_load or self._tokenizers):
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="corral-prompt-length")
        loaded = await asyncio.gather(*(self._load(model) for model in to_load))
        for model, tokenizer in zip(to_load, loaded, strict=True):
            if tokenizer is not None:
                self._tokenizers[model.name] = tokenizer
                self._owned.append(tokenizer)
        for tokenizer in self._tokenizers.values():
            bound = template_bytes(tokenizer)
            if bound is not None:
                self._template_bytes[id(tokenizer)] = bound

    async def _load(self, model: ModelConfig) -> PromptTokenizer | None:
        from corral.prefix.tokenizer import PromptTokenizer  # imports llama.cpp

        try:
            return await asyncio.to_thread(PromptTokenizer.load, model.source, cache_bytes=self._cache_bytes)
        except ModelSourceError as exc:
            logger.warning("model %s: no tokenizer at the router, its workers check prompt lengths: %s",
                           model.name, exc)
            return None

    async def check(self, model: ModelConfig, path: str, body: Mapping[str, Any],
                    max_tokens: int | None) -> Plan | None:
        """Raise ContextLengthError (400) if the prompt and ``max_tokens`` cannot fit the
        model's context; return at once when they surely fit or nothing here can tell.
        Returns the prompt's tokenizing plan when it made one (the ``kv`` policy reuses it)."""
        tokenizer = self._tokenizers.get(model.name)
        if tokenizer is None or path not in _PATHS:
            return None
        completion = max_tokens if max_tokens is not None else 1
        budget = model.context_length - completion  # tokens the prompt may have
        prompt = read_prompt(path, body)
        if prompt is None or budget < 0:
            return None  # the worker names what is wrong with it; max_tokens was checked before
        plan = None
        if isinstance(prompt, TokenPrompt):
            count = len(prompt.tokens)
        elif self._surely_fits(tokenizer, prompt, budget):
            return None
        elif model.name not in self._shared and self._fits_unplanned(tokenizer, prompt, budget):
            return None  # (a kv model is planned anyway: the policy hashes the plan)
        else:
            plan = tokenizer.plan(prompt)
            if plan is None:
                return None  # no chat template, or one that fails: the worker says so
            count = await self._count(tokenizer, plan, budget)
            if count > budget:  # rare: confirm with the worker's own way, in one piece
                count = await self._count_whole(tokenizer, prompt)
        if count > budget:
            raise _too_long(model, path, count, max_tokens)
        return plan

    async def _count_whole(self, tokenizer: PromptTokenizer, prompt: ChatPrompt | TextPrompt) -> int:
        """The prompt's tokens as the worker counts them: rendered whole, tokenized whole."""
        loop = asyncio.get_running_loop()
        tokens = await loop.run_in_executor(self._executor, tokenizer.tokenize, prompt)
        return len(tokens) if tokens is not None else 0

    def _surely_fits(self, tokenizer: PromptTokenizer, prompt: ChatPrompt | TextPrompt, budget: int) -> bool:
        """Whether the prompt's UTF-8 bytes, with what the chat template adds around its
        messages at most, fit the budget: then no rendering is needed (most requests)."""
        if isinstance(prompt, TextPrompt):
            return len(prompt.text.encode()) + ADDED_TOKENS <= budget
        bound = self._template_bytes.get(id(tokenizer))
        if bound is None:
            return False
        fixed, per_message = bound
        size = fixed + per_message * len(prompt.messages) + ADDED_TOKENS
        for message in prompt.messages:
            size += len(message["role"].encode()) + len(message["content"].encode())
            if size > budget:
                return False
        return True

    @staticmethod
    def _fits_unplanned(tokenizer: PromptTokenizer, prompt: ChatPrompt | TextPrompt, budget: int) -> bool:
        """Whether a chat's messages seen before (their cached tokens) and the bytes of the
        others fit the budget: a long conversation's new turn, checked without planning."""
        if not isinstance(prompt, ChatPrompt):
            return False
        most = tokenizer.most_tokens(prompt)
        return most is not None and most + ADDED_TOKENS <= budget

    async def _count(self, tokenizer: PromptTokenizer, plan: Plan, budget: int) -> int:
        """The prompt's tokens, exactly, or any count <= ``budget`` once it surely fits.

        Pieces cached by an earlier request (a conversation's earlier turns, a shared
        system prompt) count their tokens; a new piece counts its UTF-8 bytes, an upper
        bound. Only when that bound does not fit are the new pieces tokenized (on this
        checker's thread) and cached for the next request."""
        count = len(plan.prefix)
        new: list[str] = []
        pieces = plan.pieces
        parts = tokenizer.parts(plan)  # a cached long message counts as one
        position = 0
        while position < len(pieces):
            whole = parts.at(position)
            if whole is not None:
                count += whole[0].count
                position += whole[1]
                continue
            known = tokenizer.known(pieces[position])
            if known is None:
                new.append(pieces[position])
            else:
                count += known.count
                parts.added(position, known)
            position += 1
        if not new or count + sum(len(piece.encode()) for piece in new) + ADDED_TOKENS <= budget:
            return count
        loop = asyncio.get_running_loop()
        fresh = await loop.run_in_executor(
            self._executor, functools.partial(tokenizer.tokenize_pieces, new, add_special=plan.add_special)
        )
        for text, tokens in zip(new, fresh, strict=True):
            tokenizer.remember(text, tokens)
            count += len(tokens)
        return count

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:  # no tokenization may run when the vocabularies close
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        for tokenizer in self._owned:
            tokenizer.close()
        self._owned.clear()
        self._tokenizers.clear()
        self._shared.clear()


_ROLES = ("system", "user", "assistant")


def template_bytes(tokenizer: PromptTokenizer) -> tuple[int, int] | None:
    """What the chat template adds to messages with empty contents, at most: bytes for the
    whole prompt (default system prompt, generation prompt) and bytes per message, over
    every sequence of two roles, doubled as a margin for templates that vary with a
    message's position. None when the template cannot render those samples (the exact
    path is then always taken)."""
    if tokenizer.template is None:
        return None
    template = tokenizer.template

    def size(*roles: str) -> int:
        return len(template.render([{"role": role, "content": ""} for role in roles]).encode())

    try:
        one = [size(role) for role in _ROLES]
        two = [size(first, second) for first in _ROLES for second in _ROLES]
    except InvalidRequestError:
        return None
    per_message = max(two) - min(one)
    return max(one) + 2 * per_message, 2 * per_message


def _too_long(model: ModelConfig, path: str, count: int, max_tokens: int | None) -> ContextLengthError:
    """The worker's own words for it."""
    n_ctx = model.context_length
    if max_tokens is None:
        message = (f"this model's maximum context length is {n_ctx} tokens, but the prompt has {count} "
                   "tokens, which leaves no room for a completion; shorten the prompt")
    else:
        room = n_ctx - count
        advice = f"lower max_tokens to at most {room} or shorten the prompt" if room > 0 else "shorten the prompt"
        message = (f"this model's maximum context length is {n_ctx} tokens; the prompt has {count} tokens "
                   f"and max_tokens is {max_tokens} ({count + max_tokens} in total); {advice}")
    error = ContextLengthError(message)
    if path == "/v1/completions":
        error.param = "prompt"
    return error
