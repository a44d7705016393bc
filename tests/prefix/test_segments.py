"""Piece-by-piece tokenization equals whole-prompt tokenization, on both shipped models.

SmolLM2 has a BPE vocabulary (GPT-2 style pre-tokenizer), Gemma 3 an SPM one (with BOS
and thousands of user-defined special tokens). For each, random prompts mixing the cut
points (markers), other special tokens, near-misses of special tokens, whitespace runs,
digits, punctuation and non-ASCII text are tokenized both ways by llama.cpp itself.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.prefix.chain import Chain
from corral.prefix.segments import PieceCache, Segmenter, choose_markers
from corral.prefix.vocab import GgufVocab, SpecialToken
from corral.sources import resolve_source

pytestmark = pytest.mark.slow

CONTROL, USER_DEFINED, UNUSED, LSTRIP = 8, 16, 2, 128

# fmt: off
WORDS = [
    "the", "The", "quick", "brown", "fox", "Hello", "world", "naïve", "café", "日本語",
    "😀", "👍🏽", "x", "I'm", "don't", "it's", "12345", "3.14", "0x1F", "foo_bar",
    "CamelCase", "//", "::", "->", "{", "}", "(", ")", "...", "!?", "'", '"', "-", "#",
    "<", ">", "|", "<|", "|>", "<|im_st", "start_of", "<start_of_turn", "end_of_turn>",
]
SPACES = [" ", "  ", "   ", "\n", "\n\n", "\t", " \n", "\n ", "\r\n", ""]
# fmt: on


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma3-270m"])
def vocab(request: pytest.FixtureRequest) -> Iterator[GgufVocab]:
    loaded = GgufVocab(resolve_source(request.param).weights)
    yield loaded
    loaded.close()


def random_prompt(rng: random.Random, markers: list[str], specials: list[str]) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(1, 40)):
        roll = rng.random()
        if roll < 0.15 and markers:
            parts.append(rng.choice(markers))
        elif roll < 0.2 and specials:
            parts.append(rng.choice(specials))
        else:
            parts.append(rng.choice(WORDS))
        parts.append(rng.choice(SPACES))
    return "".join(parts)


def test_markers_are_the_template_tokens(vocab: GgufVocab) -> None:
    markers = Segmenter(vocab).markers
    expected = (
        {"<|im_start|>", "<|im_end|>"} if vocab.is_bpe else {"<start_of_turn>", "<end_of_turn>"}
    )
    assert expected <= set(markers)
    assert all(
        vocab.tokenize(text, add_special=False) == array("i", [token])
        for text, token in markers.items()
    )


def test_pieces_tokenize_to_the_whole(vocab: GgufVocab) -> None:
    segmenter = Segmenter(vocab)
    assert segmenter.segmented
    markers = list(segmenter.markers)
    others = [s.text for s in vocab.special_tokens() if s.text and s.text not in segmenter.markers]
    rng = random.Random(7)
    others = rng.sample(others, min(len(others), 50))
    for _ in range(1000):
        text = random_prompt(rng, markers, others)
        for add_special in (True, False):
            whole = vocab.tokenize(text, add_special=add_special)
            assert segmenter.tokenize(text, add_special=add_special) == whole, text


def test_rendered_conversations_tokenize_to_the_whole(vocab: GgufVocab) -> None:
    segmenter = Segmenter(vocab)
    rng = random.Random(3)
    for _ in range(50):
        turns = [
            (role, " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 60))))
            for role in ["system", *(["user", "assistant"] * rng.randint(1, 4))]
        ]
        if vocab.is_bpe:  # SmolLM2's template
            text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
            text += "<|im_start|>assistant\n"
        else:  # Gemma 3's chat format (its GGUF ships no template)
            text = "<bos>" + "".join(
                f"<start_of_turn>{'model' if role == 'assistant' else 'user'}\n{content}<end_of_turn>\n"
                for role, content in turns
            )
            text += "<start_of_turn>model\n"
        assert segmenter.tokenize(text, add_special=True) == vocab.tokenize(text, add_special=True)


def test_a_conversation_splits_into_one_piece_per_message(vocab: GgufVocab) -> None:
    segmenter = Segmenter(vocab)
    begin, end = (
        ("<|im_start|>", "<|im_end|>") if vocab.is_bpe else ("<start_of_turn>", "<end_of_turn>")
    )
    system, question = "You are terse and exact, always.", "What is the capital of France?"
    text = f"{begin}system\n{system}{end}\n{begin}user\n{question}{end}\n{begin}assistant\n"
    plan = segmenter.plan(text, add_special=False)
    assert plan.pieces == [
        f"{begin}system\n{system}",
        f"{end}\n{begin}user\n{question}",
        f"{end}\n{begin}assistant\n",
    ]
    assert plan.prefix == ()


def test_long_pieces_are_cut_into_chunks_that_tokenize_to_the_whole(vocab: GgufVocab) -> None:
    segmenter = Segmenter(vocab, chunk_chars=24)
    uncut = Segmenter(vocab, chunk_chars=100_000)
    assert segmenter.chunked
    markers = list(segmenter.markers)
    rng = random.Random(11)
    separators = [" "] * 8 + SPACES + [", ", ". ", " - "]
    cuts = 0
    for _ in range(300):
        words = [rng.choice(WORDS) + rng.choice(separators) for _ in range(rng.randint(20, 200))]
        text = rng.choice(markers) + "".join(words) + rng.choice(markers) + "".join(words[:20])
        pieces = segmenter.plan(text, add_special=True).pieces
        cuts += len(pieces) - len(uncut.plan(text, add_special=True).pieces)
        assert segmenter.tokenize(text, add_special=True) == vocab.tokenize(text, add_special=True)
    assert cuts > 600  # the cuts were really exercised


def test_chunks_start_at_a_space_before_a_letter(vocab: GgufVocab) -> None:
    segmenter = Segmenter(vocab, chunk_chars=10)
    text = "alpha beta1 gamma, delta  epsilon 9 zeta eta theta iota kappa lambda mu " * 8
    pieces = segmenter.plan(text, add_special=False).pieces
    assert "".join(pieces) == text and len(pieces) >= 3
    assert all(
        piece[0] == " " and piece[1].isalpha() and piece[1].isascii() for piece in pieces[1:]
    )
    assert all(len(piece) >= 10 * 4**number for number, piece in enumerate(pieces[:-1]))


def test_bos_is_added_once_in_front(vocab: GgufVocab) -> None:
    plan = Segmenter(vocab).plan("hello <end_of_turn> there", add_special=True)
    assert plan.prefix == ((vocab.bos,) if vocab.add_bos else ())


# -- without the real vocabularies ------------------------------------------------------


def test_markers_skip_tokens_that_overlap_contain_or_strip() -> None:
    specials = [
        SpecialToken(0, "<s>", CONTROL),
        SpecialToken(1, "<turn>", CONTROL),
        SpecialToken(2, "<turn>x", USER_DEFINED),  # contains <turn>
        SpecialToken(3, "[a]", CONTROL),
        SpecialToken(4, "a]b", USER_DEFINED),  # overlaps [a]
        SpecialToken(5, "<strip>", CONTROL | LSTRIP),
        SpecialToken(6, "<unused1>", CONTROL | UNUSED),
        SpecialToken(7, "<user>", USER_DEFINED),  # not a control token
        SpecialToken(8, "aa", CONTROL),  # overlaps itself
    ]
    assert choose_markers(specials) == {"<s>": 0}


class ContextVocab:
    """A vocabulary whose tokens depend on where a text starts: pieces cannot be joined."""

    path = Path("context.gguf")
    is_bpe, is_spm, add_eos, add_bos, bos = True, False, False, False, -1

    def special_tokens(self) -> list[SpecialToken]:
        return [SpecialToken(1, "<m>", CONTROL)]

    def tokenize(self, text: str, *, add_special: bool) -> array[int]:
        tokens = array("i", [1000 + ord(char) for char in text.replace("<m>", "\0")])
        if tokens:
            tokens[0] += 1
        return tokens


def test_a_vocabulary_that_fails_the_self_check_is_tokenized_whole() -> None:
    vocab: Any = ContextVocab()
    segmenter = Segmenter(vocab)
    assert not segmenter.segmented
    plan = segmenter.plan("a<m>b", add_special=True)
    assert plan.pieces == ["a<m>b"] and plan.add_special


def test_piece_cache_is_bounded_and_lru() -> None:
    cache = PieceCache(max_bytes=1000)
    for number in range(50):
        cache.put(f"piece {number}", array("i", range(10)))
        assert cache.bytes <= 1000
    assert cache.get("piece 0") is None
    assert cache.get("piece 49") is not None
    assert 0 < len(cache) < 50
    cache.put("x" * 10_000, array("i", [1]))  # larger than the whole cache: not kept
    assert cache.get("x" * 10_000) is None


def test_piece_cache_counts_continuations() -> None:
    cache = PieceCache(max_bytes=100_000)
    piece = cache.put("some text", array("i", range(40)))
    before = cache.bytes
    for parent in range(10):  # one piece seen after many different prefixes
        step = Chain(seed="m", block_size=16).continuation(piece.tokens)
        cache.remember(piece, (parent, b""), step)
    assert len(piece.continuations) == 4  # the oldest are dropped
    assert cache.bytes > before and cache.bytes == piece.bytes
