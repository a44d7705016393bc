import random
import subprocess
import sys

import pytest

from corral.prefix.hashing import block_hashes, root_hash, text_block_hashes
from corral.prefix.prompt import canonical_text, read_prompt
from corral.router.routing.base import RequestContext
from corral.router.routing.prepare import TextBlocks


def test_only_full_blocks_are_hashed():
    assert len(block_hashes(list(range(40)), block_size=16, seed="m")) == 2
    assert block_hashes(list(range(15)), block_size=16, seed="m") == []
    assert len(block_hashes(list(range(64)), block_size=16, seed="m", limit=3)) == 3


def test_chain_depends_on_the_whole_prefix():
    a = block_hashes([1] * 16 + [2] * 16, block_size=16, seed="m")
    b = block_hashes([3] * 16 + [2] * 16, block_size=16, seed="m")
    assert a[1] != b[1]  # same second block, different parent
    assert block_hashes([1] * 16 + [2] * 16 + [9] * 16, block_size=16, seed="m")[:2] == a


def test_seed_separates_models():
    tokens = list(range(32))
    assert block_hashes(tokens, block_size=16, seed="a") != block_hashes(
        tokens, block_size=16, seed="b"
    )
    assert root_hash("a") != root_hash("b")


def test_stable_across_processes():
    code = "from corral.prefix.hashing import block_hashes; print(block_hashes(list(range(64)), block_size=16, seed='smollm2'))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert other.strip() == str(block_hashes(list(range(64)), block_size=16, seed="smollm2"))


def test_large_token_ids_and_bad_block_size():
    assert len(block_hashes([262_143] * 4, block_size=2, seed="gemma")) == 2
    with pytest.raises(ValueError):
        block_hashes([1], block_size=0, seed="m")


def test_text_blocks():
    hashes = text_block_hashes("abcdefgh" * 4, block_chars=8, seed="m")
    assert len(hashes) == 4 and len(set(hashes)) == 4  # equal chunks, different parents
    assert text_block_hashes("abcdefgh" * 4 + "xyz", block_chars=8, seed="m") == hashes
    assert text_block_hashes("é" * 10, block_chars=4, seed="m") == text_block_hashes(
        "é" * 8, block_chars=4, seed="m"
    )


async def test_chat_text_blocks_hashed_message_by_message_equal_the_whole_text() -> None:
    """The prefix policy hashes a chat prompt message by message from a memo; the hashes
    are those of its whole canonical text, however messages and blocks fall."""
    rng = random.Random(3)
    blocks = TextBlocks(block_chars=16, memo_chars=2_000)
    history: list[dict[str, str]] = []
    for _turn in range(60):
        content = "".join(rng.choice("ab é😀\n") for _ in range(rng.randrange(40)))
        history.append({"role": rng.choice(["system", "user", "assistant"]), "content": content})
        for messages in (history, history[-3:], history):  # seen, new, seen again
            ctx = RequestContext("m", "chat", "/v1/chat/completions", {"messages": messages}, None, {})
            await blocks.prepare(ctx)
            prompt = read_prompt("/v1/chat/completions", {"messages": messages})
            assert prompt is not None and ctx.routing.blocks is not None
            whole = canonical_text(prompt)
            assert list(ctx.routing.blocks.hashes) == text_block_hashes(whole, block_chars=16, seed="m")
            assert ctx.routing.blocks.total_blocks == len(whole) / 16
        assert blocks._memo.chars <= 2_000  # the memo stays within its bound
