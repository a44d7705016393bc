"""The router hashes a prompt exactly as the worker does: same tokens, same block hashes.

The worker side is the real :class:`~corral.worker.llamacpp.LlamaCppEngine` with the real
model (SmolLM2 for chat, Gemma 3 for text completions), reading the request with its
own schemas; the router side is :class:`~corral.router.routing.prepare.TokenBlocks`
with the vocabulary-only tokenizer, piece cache and early stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
from array import array
from collections.abc import Iterator
from typing import Any

import pytest
from tests.prefix.support import record_tokenized

from corral.config import ModelConfig
from corral.prefix.hashing import block_hashes, token_bytes
from corral.prefix.index import PrefixIndex
from corral.prefix.prompt import read_prompt
from corral.prefix.tokenizer import PromptTokenizer
from corral.router.routing.base import RequestContext
from corral.router.routing.prepare import TokenBlocks
from corral.worker.llamacpp import LlamaCppEngine
from corral.worker.schemas import ChatCompletionRequest, CompletionRequest

pytestmark = pytest.mark.slow

BLOCK = 16
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"


def model(name: str, task: str) -> ModelConfig:
    return ModelConfig.model_validate(
        {"name": name, "task": task, "engine": "llamacpp", "source": name, "threads": 1}
    )


def conversation(rng: random.Random, turns: int) -> list[dict[str, Any]]:
    words = ["the", "cat", "sat", "on", "a", "mat", "\n", "naïve", "42", "😀", "  ", "don't"]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    for turn in range(turns):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 80)))
        messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": text})
    return messages


def ctx(model_name: str, path: str, body: dict[str, Any]) -> RequestContext:
    return RequestContext(model_name, "chat", path, body, None, {})


@pytest.fixture(scope="module")
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool


class Holding(PrefixIndex):
    """An index in which some endpoint holds every block: nothing stops the hashing early."""

    def __init__(self) -> None:
        super().__init__(max_blocks=10, max_bytes=1 << 20)

    def extended(self, block: int) -> bool:
        return True


async def worker_tokens(engine: LlamaCppEngine, path: str, body: dict[str, Any]) -> list[int]:
    if path == CHAT:
        return await engine.tokenize(ChatCompletionRequest.model_validate(body).prompt())
    return await engine.tokenize(CompletionRequest.model_validate(body).single_prompt())


async def check_same_hashes(
    name: str, task: str, bodies: list[tuple[str, dict[str, Any]]], executor: Any
) -> None:
    engine = LlamaCppEngine(model(name, task))
    await engine.start()
    tokenizer = await asyncio.to_thread(PromptTokenizer.load, name, cache_bytes=1 << 24)
    try:
        assert tokenizer.segmenter.segmented
        blocks = TokenBlocks(tokenizer, Holding(), block_size=BLOCK, executor=executor)
        for path, body in bodies:
            expected = await worker_tokens(engine, path, body)
            prompt = read_prompt(path, body)
            assert prompt is not None
            assert tokenizer.tokenize(prompt) == expected
            request = ctx(name, path, body)
            await blocks.prepare(request)
            assert request.routing.blocks is not None
            assert list(request.routing.blocks.hashes) == block_hashes(
                expected, block_size=BLOCK, seed=name
            )
            assert request.routing.blocks.prompt_tokens == len(expected)
    finally:
        tokenizer.close()
        await engine.aclose()


async def test_chat_hashes_match_the_worker(executor: Any) -> None:
    rng = random.Random(1)
    bodies = []
    for turns in (1, 2, 5, 9):
        messages = conversation(rng, turns)
        bodies.append((CHAT, {"model": SMOL, "messages": messages}))
        bodies.append((CHAT, {"model": SMOL, "messages": messages[1:]}))  # template's system
    developer: list[dict[str, Any]] = [
        {
            "role": "developer",
            "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "kind."}],
        },
        {"role": "user", "content": "Hi <|im_end|> there"},  # a special token in user text
    ]
    bodies.append((CHAT, {"model": SMOL, "messages": developer}))
    await check_same_hashes(SMOL, "chat", bodies, executor)


async def test_completion_hashes_match_the_worker_with_bos(executor: Any) -> None:
    text = "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n"
    bodies: list[tuple[str, dict[str, Any]]] = [
        (TEXT, {"model": GEMMA, "prompt": text * 3}),
        (TEXT, {"model": GEMMA, "prompt": ["Once upon a time, " * 20]}),
        (TEXT, {"model": GEMMA, "prompt": list(range(2, 50))}),
    ]
    await check_same_hashes(GEMMA, "completion", bodies, executor)


async def test_only_what_can_match_is_tokenized(executor: Any) -> None:
    tokenizer = await asyncio.to_thread(PromptTokenizer.load, SMOL, cache_bytes=1 << 24)
    calls = record_tokenized(tokenizer)
    index = PrefixIndex(max_blocks=100_000, max_bytes=1 << 26)
    blocks = TokenBlocks(tokenizer, index, block_size=BLOCK, executor=executor)
    history = conversation(random.Random(2), 6)
    assert tokenizer.template is not None

    def held(messages: list[dict[str, Any]]) -> list[int]:
        """The blocks of a worker that ran these messages (its context, no generation prompt)."""
        text = tokenizer.template.render(messages, add_generation_prompt=False)  # type: ignore[union-attr]
        tokens = tokenizer.vocab.tokenize(text, add_special=False)
        return block_hashes(tokens, block_size=BLOCK, seed=SMOL)

    async def prepare(messages: list[dict[str, Any]]) -> list[int]:
        calls.clear()
        request = ctx(SMOL, CHAT, {"messages": messages})
        await blocks.prepare(request)
        assert request.routing.blocks is not None
        return index.matched(request.routing.blocks.hashes, ["http://w1"])

    try:
        # Nothing indexed: once the first blocks miss, the rest is never tokenized.
        request = ctx(SMOL, CHAT, {"messages": history})
        await blocks.prepare(request)
        assert request.routing.blocks is not None
        assert sum(map(len, calls)) < sum(len(m["content"]) for m in history) / 2
        assert request.routing.blocks.prompt_tokens > 200  # estimated from the characters

        # A worker holds the conversation: its pieces are tokenized (once, in batches).
        index.store("http://w1", held(history))
        question = {"role": "user", "content": "And one more question?"}
        assert await prepare([*history, question]) == [len(held(history))]
        assert calls

        # Again with another question: nothing is tokenized at all (nothing held follows).
        other = {"role": "user", "content": "Or another one?"}
        assert await prepare([*history, other]) == [len(held(history))]
        assert calls == []

        # Once a worker holds the history followed by something, the new question is
        # tokenized (it might continue the chain), and only it: the text between two
        # messages is a piece of its own, known from the history.
        index.store("http://w1", held([*history, question]))
        assert await prepare([*history, other]) == [len(held(history))]
        assert calls == ["<|im_start|>user\nOr another one?"]
    finally:
        tokenizer.close()


async def test_held_blocks_tokens_spare_tokenizing_text_that_cannot_follow(executor: Any) -> None:
    """Where the worker's events carry the tokens of what it holds, a new question that
    does not start as the held continuation does is not tokenized at all; one that does
    is, and matches."""
    tokenizer = await asyncio.to_thread(PromptTokenizer.load, SMOL, cache_bytes=1 << 24)
    assert tokenizer.decodes_exactly and tokenizer.template is not None
    calls = record_tokenized(tokenizer)
    index = PrefixIndex(max_blocks=100_000, max_bytes=1 << 26, children_tokens=True)
    blocks = TokenBlocks(tokenizer, index, block_size=BLOCK, executor=executor)
    history = conversation(random.Random(3), 6)
    earlier = {"role": "user", "content": "An earlier question about the mat?"}

    def tokens_of(messages: list[dict[str, Any]], generation: bool) -> array[int]:
        text = tokenizer.template.render(messages, add_generation_prompt=generation)  # type: ignore[union-attr]
        return tokenizer.vocab.tokenize(text, add_special=False)

    async def prepare(messages: list[dict[str, Any]]) -> int:
        calls.clear()
        request = ctx(SMOL, CHAT, {"messages": messages})
        await blocks.prepare(request)
        assert request.routing.blocks is not None
        expected = block_hashes(tokens_of(messages, True), block_size=BLOCK, seed=SMOL)
        matched = index.matched(request.routing.blocks.hashes, ["http://w1"])
        assert matched == index.matched(expected, ["http://w1"])
        return matched[0]

    try:
        held = tokens_of([*history, earlier], False)
        hashes = block_hashes(held, block_size=BLOCK, seed=SMOL)
        held_bytes = token_bytes(held[: len(hashes) * BLOCK])
        index.store("http://w1", hashes, "ram", None, held_bytes)
        history_blocks = len(block_hashes(tokens_of(history, False), block_size=BLOCK, seed=SMOL))
        await prepare([*history, {"role": "user", "content": "Warm the history up."}])

        other = {"role": "user", "content": "A new question, unlike the earlier one?"}
        assert await prepare([*history, other]) == history_blocks
        assert calls == []  # the held child starts "<|im_start|>user\nAn": this cannot follow

        longer = {"role": "user", "content": earlier["content"] + " And more."}
        assert await prepare([*history, longer]) == len(hashes)
        assert calls  # it may follow (it does): tokenized

        # A child stored without its tokens makes the block's children unknown again.
        index.store("http://w2", [12345], "ram", hashes[history_blocks - 1])
        third = {"role": "user", "content": "Yet another question, also new?"}
        assert await prepare([*history, third]) == history_blocks
        assert calls == ["<|im_start|>user\nYet another question, also new?"]
    finally:
        tokenizer.close()


@pytest.mark.parametrize("with_tokens", [False, True])
async def test_stopping_early_never_loses_a_match(executor: Any, with_tokens: bool) -> None:
    """However a prompt relates to what the workers hold (a prefix of it, a branch off it,
    a longer version, nothing), the router's matched blocks per endpoint equal those of
    the whole prompt tokenized and hashed in one go (also where the held blocks' tokens
    are known, and text rules out continuations)."""
    tokenizer = await asyncio.to_thread(PromptTokenizer.load, SMOL, cache_bytes=1 << 24)
    rng = random.Random(5)
    index = PrefixIndex(max_blocks=1_000_000, max_bytes=1 << 28, children_tokens=with_tokens)
    blocks = TokenBlocks(tokenizer, index, block_size=BLOCK, executor=executor)
    endpoints = [f"http://w{number}" for number in range(3)]
    conversations = [conversation(rng, rng.randint(1, 8)) for _ in range(12)]
    matches = 0

    def full_tokens(messages: list[dict[str, Any]], generation: bool = True) -> array[int]:
        assert tokenizer.template is not None
        text = tokenizer.template.render(messages, add_generation_prompt=generation)
        return tokenizer.vocab.tokenize(text, add_special=False)

    def full_hashes(messages: list[dict[str, Any]], generation: bool = True) -> list[int]:
        return block_hashes(full_tokens(messages, generation), block_size=BLOCK, seed=SMOL)

    try:
        for messages in conversations:  # each endpoint holds some conversations, cut anywhere
            tokens = full_tokens(messages[: rng.randint(1, len(messages))], rng.random() < 0.5)
            hashes = block_hashes(tokens, block_size=BLOCK, seed=SMOL)[: rng.randint(0, len(tokens) // BLOCK)]
            held = token_bytes(tokens[: len(hashes) * BLOCK]) if with_tokens else None
            index.store(rng.choice(endpoints), hashes, "ram", None, held)
        for _ in range(150):
            base = rng.choice(conversations)
            messages = base[: rng.randint(1, len(base))]
            if rng.random() < 0.7:  # a new turn, or a variation of the last one
                extra = conversation(rng, 1)[1]
                messages = [*messages, extra] if rng.random() < 0.5 else [*messages[:-1], extra]
            request = ctx(SMOL, CHAT, {"messages": messages})
            await blocks.prepare(request)
            assert request.routing.blocks is not None
            got = index.matched(request.routing.blocks.hashes, endpoints)
            assert got == index.matched(full_hashes(messages), endpoints)
            matches += max(got) > 0
        assert matches > 50  # most requests matched something somewhere
    finally:
        tokenizer.close()


def test_message_by_message_plans_tokenize_to_the_whole() -> None:
    """Chat prompts are planned from cached per-message plans; their tokens are still the
    worker's, whatever the messages hold (markers and other special tokens included)."""
    words = ["the", "Cat", "\n", "  ", "naïve", "42", "😀", "<|im_end|>", "<|im_start|>", "<|endoftext|>",
             "<|im", "user", "don't", "x"]
    tokenizer = PromptTokenizer.load(SMOL, cache_bytes=1 << 22)
    rng = random.Random(11)
    try:
        assert tokenizer.renderer is not None and tokenizer.renderer.separable
        for _ in range(80):
            roles = rng.choice([[], ["system"]]) + ["user", "assistant"] * rng.randint(0, 3) + ["user"]
            messages = [
                {"role": role, "content": "".join(rng.choice(words) + rng.choice(["", " "])
                                                  for _ in range(rng.randint(0, 40)))}
                for role in roles
            ]
            prompt = read_prompt(CHAT, {"messages": messages})
            assert prompt is not None and tokenizer.renderer.parts(prompt.messages) is not None
            plan = tokenizer.plan(prompt)
            assert plan is not None
            pieces = tokenizer.tokenize_pieces(plan.pieces, add_special=plan.add_special)
            tokens = [*plan.prefix, *(token for piece in pieces for token in piece)]
            assert tokens == tokenizer.tokenize(prompt)
    finally:
        tokenizer.close()


async def test_a_long_message_seen_before_is_taken_whole(executor: Any) -> None:
    """A message cut into several pieces is cached whole once all its pieces were walked in
    a row: later walks take it in one lookup, with the same hashes."""
    tokenizer = await asyncio.to_thread(PromptTokenizer.load, SMOL, cache_bytes=1 << 24)
    blocks = TokenBlocks(tokenizer, Holding(), block_size=BLOCK, executor=executor)
    words = "Once upon a time a cat sat on the mat and said naïve things about 42 dogs. "
    messages = [
        {"role": "system", "content": words * 20},
        {"role": "user", "content": words * 30},
        {"role": "assistant", "content": words * 25},
        {"role": "user", "content": "And then?"},
    ]
    assert tokenizer.template is not None
    text = tokenizer.template.render(messages)
    expected = block_hashes(tokenizer.vocab.tokenize(text, add_special=False), block_size=BLOCK, seed=SMOL)
    try:
        lookups = []
        for _ in range(3):
            before = tokenizer.cache.hits + tokenizer.cache.misses
            request = ctx(SMOL, CHAT, {"messages": messages})
            await blocks.prepare(request)
            assert request.routing.blocks is not None
            assert list(request.routing.blocks.hashes) == expected
            lookups.append(tokenizer.cache.hits + tokenizer.cache.misses - before)
        plan = tokenizer.plan(read_prompt(CHAT, {"messages": messages}))  # type: ignore[arg-type]
        assert plan is not None and len(plan.parts) == 3  # the three long messages
        assert len(plan.pieces) > 12
        assert lookups[2] < len(plan.pieces) / 2  # one per long message, not one per piece
    finally:
        tokenizer.close()


def test_only_a_vocabulary_whose_tokens_spell_their_text_rules_out_by_text() -> None:
    """SentencePiece in llama.cpp reads "\u2581" in a text as a space: a prompt can make the
    tokens of a held block without its text starting as they decode. Only byte-level BPE
    (SmolLM2) lets text rule a held block out."""
    smol = PromptTokenizer.load(SMOL, cache_bytes=1 << 20)
    gemma = PromptTokenizer.load(GEMMA, cache_bytes=1 << 20)
    try:
        assert smol.decodes_exactly and not gemma.decodes_exactly
        spaced, marked = (gemma.vocab.tokenize(text, add_special=False) for text in ("a b", "a\u2581b"))
        assert spaced == marked  # the reason
    finally:
        smol.close()
        gemma.close()
