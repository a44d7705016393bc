"""Per-request preparation for the prefix-aware policies: the prompt's block hashes.

``TextBlocks`` (approximate ``prefix`` policy): the canonical text of the whole prompt in
character blocks -- no tokenizer, microseconds, works for any engine; a chat prompt's
messages seen before cost a lookup each.

``TokenBlocks`` (exact ``kv`` policy): the tokens the worker will compute, in blocks of
``prefix.block_size``, hashed as the worker hashes them (model name as seed). Only what
can possibly match is computed: pieces are taken in order, cached ones for free (their
tokens, and what they added to the hash chain, are cached with them); before tokenizing
a new one, the last block so far is looked up, and unless some endpoint holds it *and a
block chained after it* whose text the prompt may continue into
(:mod:`corral.prefix.followers`: known where the workers' KV events carry tokens), nothing
after it can match, so the rest of the prompt is never tokenized (its size is estimated
from the characters). In a multi-turn conversation the router thus tokenizes the last
answer (the worker generated it, so it may hold it) but not the new question, which
nothing can hold yet. Tokenizing runs on the given thread
pool, except a batch of at most :data:`INLINE_CHARS` characters: that is tokenized on the
event loop, because it costs less (~2 us per token) than the hand-off to a thread and back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from array import array
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from corral.prefix.chain import Chain
from corral.prefix.hashing import text_continuation, text_root
from corral.prefix.index import PrefixIndex
from corral.prefix.memo import TextMemo
from corral.prefix.prompt import (
    ChatPrompt,
    TokenPrompt,
    canonical_records,
    canonical_text,
    read_prompt,
)
from corral.router.routing.base import PromptBlocks, RequestContext

if TYPE_CHECKING:  # llama.cpp is imported only where a model is routed by tokens
    from corral.prefix.segments import Piece, Plan
    from corral.prefix.tokenizer import PromptTokenizer

logger = logging.getLogger(__name__)

#: Characters per token where they must be guessed (English text in BPE vocabularies).
CHARS_PER_TOKEN = 4.0
#: How much new text one trip to the tokenizer thread takes (then the last block is looked
#: up): a little at first (new text usually stops matching at once), twice as much after
#: each trip whose blocks were still held somewhere.
FIRST_BATCH_CHARS = 64
MAX_BATCH_CHARS = 4096
#: A batch this small is tokenized on the event loop (tens of microseconds).
INLINE_CHARS = 256
#: Characters of messages whose share of the text chain is remembered (``TextBlocks``).
MEMO_CHARS = 4 * 1024 * 1024


def _leading_text(pieces: list[str], start: int, size: int) -> bytes:
    """At least ``size`` bytes of the pieces' text from ``pieces[start]`` (UTF-8), or all."""
    taken: list[str] = []
    chars = 0
    for piece in pieces[start:]:
        taken.append(piece)
        chars += len(piece)
        if chars >= size:  # a character is at least a byte
            break
    return "".join(taken).encode("utf-8")


class TextBlocks:
    """Character blocks of the prompt's canonical text (approximate).

    A chat prompt is hashed message by message: what a message adds to the chain (given
    where the chain stood) is remembered (LRU, bounded by characters), so a conversation
    re-sent with one more turn hashes that turn only."""

    def __init__(self, *, block_chars: int, memo_chars: int = MEMO_CHARS) -> None:
        self._block_chars = block_chars
        # (parent, pending, message) -> what the message adds to the chain
        self._memo: TextMemo[tuple[int, str, str], tuple[tuple[int, ...], int, str]] = TextMemo(
            memo_chars, lambda key: len(key[1]) + len(key[2])
        )

    async def prepare(self, ctx: RequestContext) -> None:
        prompt = read_prompt(ctx.path, ctx.body)
        if prompt is None:
            return
        records = canonical_records(prompt) if isinstance(prompt, ChatPrompt) else [canonical_text(prompt)]
        parent, pending = text_root(ctx.model), ""
        hashes: list[int] = []
        chars = 0
        for record in records:
            step, parent, pending = self._memo.get_or_make((parent, pending, record), self._continue)
            hashes += step
            chars += len(record)
        ctx.routing.blocks = PromptBlocks(
            hashes,
            block_tokens=self._block_chars / CHARS_PER_TOKEN,
            total_blocks=chars / self._block_chars,
            prompt_tokens=round(chars / CHARS_PER_TOKEN),
        )

    def _continue(self, key: tuple[int, str, str]) -> tuple[tuple[int, ...], int, str]:
        parent, pending, record = key
        return text_continuation(parent, pending, record, self._block_chars)


class TokenBlocks:
    """Token blocks exactly as the worker hashes them, computed only as far as they can match."""

    def __init__(
        self,
        tokenizer: PromptTokenizer,
        index: PrefixIndex,
        *,
        block_size: int,
        executor: Executor,
    ) -> None:
        self.tokenizer = tokenizer
        self._index = index
        self._block_size = block_size
        self._executor = executor

    async def prepare(self, ctx: RequestContext) -> None:
        chain = Chain(seed=ctx.model, block_size=self._block_size)
        plan = ctx.routing.plan  # the prompt-length check's, for a text or chat prompt
        prompt = None if plan is not None else read_prompt(ctx.path, ctx.body)
        if isinstance(prompt, TokenPrompt):
            chain.extend(array("i", prompt.tokens))
            estimate = chain.tokens
        else:
            if plan is None and prompt is not None:
                plan = self.tokenizer.plan(prompt)
            if plan is None:
                return
            try:
                estimate = await self._walk(plan, chain)
            except (OSError, ValueError, UnicodeError):
                logger.exception("cannot tokenize a prompt for model %s", ctx.model)
                return
        ctx.routing.blocks = PromptBlocks(
            chain.hashes,
            block_tokens=self._block_size,
            total_blocks=estimate / self._block_size,
            prompt_tokens=estimate,
        )

    async def _walk(self, plan: Plan, chain: Chain) -> int:
        """Hash the prompt's pieces in order, as far as they can match; the whole prompt's
        token count (estimated from the characters of what was not tokenized)."""
        if plan.prefix:
            chain.extend(array("i", plan.prefix))
        pieces = plan.pieces
        parts = self.tokenizer.parts(plan)
        position = chars = 0
        budget = FIRST_BATCH_CHARS
        while position < len(pieces):
            whole = parts.at(position)
            if whole is not None:
                part, count = whole
                self._add(chain, part)
                chars += len(part.text)
                position += count
                continue
            known = self.tokenizer.known(pieces[position])
            if known is not None:
                self._add(chain, known)
                parts.added(position, known)
                chars += len(pieces[position])
                position += 1
                continue
            if chain.hashes and not self._may_continue(chain, pieces, position):
                rest = sum(len(piece) for piece in pieces[position:])  # nothing more can match
                per_char = chain.tokens / chars if chars else 1 / CHARS_PER_TOKEN
                return chain.tokens + round(rest * per_char)
            end, found, todo = self._batch(pieces, position, budget)
            budget = min(2 * budget, MAX_BATCH_CHARS)
            work = functools.partial(
                self.tokenizer.tokenize_pieces, todo, add_special=plan.add_special
            )
            if sum(len(text) for text in todo) <= INLINE_CHARS:
                fresh = work()
            else:
                fresh = await asyncio.get_running_loop().run_in_executor(self._executor, work)
            new = {
                text: self.tokenizer.remember(text, tokens)
                for text, tokens in zip(todo, fresh, strict=True)
            }
            for index in range(position, end):
                held = found.get(index)
                piece = new[pieces[index]] if held is None else held
                self._add(chain, piece)
                parts.added(index, piece)
                chars += len(pieces[index])
            position = end
        return chain.tokens

    def _may_continue(self, chain: Chain, pieces: list[str], position: int) -> bool:
        """Whether some endpoint may hold a block after the chain's last one that the
        prompt, from ``pieces[position]`` on, continues into: a block held with a child,
        unless every child's tokens are known and the text does not start as any does."""
        last, pending = chain.state
        if not self._index.extended(last):
            return False
        children = self._index.followers.children(last)
        if children is None or not self.tokenizer.decodes_exactly:
            return True
        text = b""
        for child in children:
            if len(child) != self._block_size * 4:
                return True  # not one of this chain's blocks: cannot rule it out
            if not child.startswith(pending):
                continue
            expected = self.tokenizer.decode(child[len(pending) :])
            if len(text) < len(expected):
                text = _leading_text(pieces, position, len(expected))
            if text.startswith(expected):
                return True
        return False

    def _add(self, chain: Chain, piece: Piece) -> None:
        """Extend the chain by a piece, reusing what the piece added to this chain before."""
        if piece.count < self._block_size:
            chain.extend(piece.tokens)  # at most one block: not worth caching
            return
        state = chain.state
        step = piece.continuations.get(state)
        if step is None:
            step = chain.continuation(piece.tokens)
            self.tokenizer.cache.remember(piece, state, step)
        chain.apply(step)

    def _batch(
        self, pieces: list[str], start: int, budget: int
    ) -> tuple[int, dict[int, Piece], list[str]]:
        """Pieces from ``start`` worth one trip to the thread: where the batch ends, the
        pieces already known (held here, so no eviction can lose them), and the distinct
        texts still to tokenize."""
        found: dict[int, Piece] = {}
        todo: dict[str, None] = {}
        size = 0
        end = start
        while end < len(pieces) and size < budget:
            piece = pieces[end]
            known = self.tokenizer.known(piece) if end > start else None
            if known is not None:
                found[end] = known
            elif piece not in todo:
                todo[piece] = None
                size += len(piece)
            end += 1
        return end, found, list(todo)
