"""The incremental chain gives exactly ``block_hashes``' hashes, however the tokens are cut."""

from __future__ import annotations

import random
from array import array

from corral.prefix.chain import Chain
from corral.prefix.hashing import block_hashes


def test_pieces_in_any_cut_hash_like_the_whole() -> None:
    rng = random.Random(0)
    for _ in range(200):
        block = rng.choice([1, 2, 16, 64])
        tokens = [rng.randrange(262_144) for _ in range(rng.randrange(0, 300))]
        chain = Chain(seed="smollm2", block_size=block)
        start = 0
        while start < len(tokens):
            end = start + rng.randrange(0, 40)
            chain.extend(array("i", tokens[start:end]))
            start = end
        assert chain.hashes == block_hashes(tokens, block_size=block, seed="smollm2")
        assert chain.tokens == len(tokens)


def test_a_continuation_is_the_same_from_the_same_state() -> None:
    chain = Chain(seed="m", block_size=4)
    chain.extend(array("i", [1, 2, 3, 4, 5]))
    state = chain.state
    step = chain.continuation(array("i", [6, 7, 8, 9]))
    other = Chain(seed="m", block_size=4)
    other.extend(array("i", [1, 2, 3, 4, 5]))
    assert other.state == state
    other.apply(step)
    chain.extend(array("i", [6, 7, 8, 9]))
    assert other.hashes == chain.hashes == block_hashes(range(1, 10), block_size=4, seed="m")
    assert other.state == chain.state
