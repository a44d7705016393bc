"""The prefix index: what it answers, and that it never grows past its bounds."""

from __future__ import annotations

import tracemalloc

import pytest

from corral.prefix.index import ENTRY_BYTES, SHARED_MEDIA, PrefixIndex


def index(max_blocks: int = 1000, max_bytes: int = 1 << 30, children_tokens: bool = False) -> PrefixIndex:
    return PrefixIndex(max_blocks=max_blocks, max_bytes=max_bytes, children_tokens=children_tokens)


def test_matched_counts_leading_blocks_per_endpoint() -> None:
    idx = index()
    idx.store("a", [1, 2, 3])
    idx.store("b", [1, 2])
    idx.store("c", [2, 3])  # no first block: holds no usable prefix
    assert idx.matched([1, 2, 3, 4], ["a", "b", "c", "d"]) == [3, 2, 0, 0]
    assert idx.matched([], ["a"]) == [0]


def test_extended_blocks_have_a_child_held_somewhere() -> None:
    idx = index()
    idx.store("a", [1, 2])  # 1 -> 2
    idx.store("b", [3])
    idx.store("b", [4], parent=3)  # 3 -> 4, in two events
    assert idx.extended(1) and not idx.extended(2)
    assert idx.extended(3) and not idx.extended(4)
    assert not idx.extended(99)
    idx.clear("b")
    assert not idx.extended(3)
    idx.remove("a", [2])
    assert idx.matched([1, 2], ["a"]) == [1]  # 1 stays (its child bit is only a hint)


def test_remove_and_clear() -> None:
    idx = index()
    idx.store("a", [1, 2, 3])
    idx.store("b", [1])
    idx.remove("a", [3, 99])
    assert idx.matched([1, 2, 3], ["a", "b"]) == [2, 1]
    idx.clear("a")
    assert idx.matched([1, 2, 3], ["a", "b"]) == [0, 1]
    assert len(idx) == 1
    idx.clear("nobody")
    idx.remove("nobody", [1])


def test_a_block_stays_while_any_medium_holds_it() -> None:
    idx = index()
    idx.store("a", [1, 2], medium="ram")
    idx.store("a", [1], medium="disk")
    idx.remove("a", [1, 2], medium="ram")
    assert idx.matched([1, 2], ["a"]) == [1]
    assert len(idx) == 1
    idx.remove("a", [1], medium="disk")
    assert len(idx) == 0


def test_entries_bound_evicts_least_recently_used() -> None:
    idx = index(max_blocks=4)
    idx.store("a", [1, 2, 3, 4])
    idx.touch("a", [1])  # 1 is now the most recently used
    idx.store("a", [5])
    assert len(idx) == 4 and idx.evictions == 1
    assert idx.matched([1], ["a"]) == [1]  # 2 went, not 1
    assert idx.matched([2], ["a"]) == [0]


def test_eviction_takes_from_the_endpoint_holding_most() -> None:
    idx = index(max_blocks=6)
    idx.store("busy", range(100, 105))
    idx.store("quiet", [1])
    idx.store("quiet", [2])  # over the bound: "busy" gives up its oldest block
    assert idx.blocks("quiet") == 2 and idx.blocks("busy") == 4
    assert idx.matched([100], ["busy"]) == [0]


def test_bytes_bound_sets_the_capacity() -> None:
    assert index(max_blocks=10**9, max_bytes=100 * ENTRY_BYTES).capacity == 100
    idx = index(max_blocks=10**9, max_bytes=100 * ENTRY_BYTES, children_tokens=True)
    assert idx.capacity == 75  # a quarter of the bytes is for the children's tokens
    for start in range(0, 10_000, 50):
        idx.store(f"e{start % 7}", range(start, start + 50), tokens=bytes(50 * 64))
        assert len(idx) <= 75 and idx.bytes <= 100 * ENTRY_BYTES
    with pytest.raises(ValueError):
        PrefixIndex(max_blocks=0, max_bytes=1 << 20)


@pytest.mark.parametrize("with_tokens", [False, True])
def test_memory_stays_under_the_byte_bound(with_tokens: bool) -> None:
    """Measured, not just accounted: tracemalloc while the index churns at its bound (with
    tokens, the children's tokens are kept too)."""
    max_bytes = 4 * 1024 * 1024
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        idx = index(max_blocks=10**9, max_bytes=max_bytes, children_tokens=with_tokens)
        peak = 0
        for request in range(2_000):
            base = request * 1_000_003
            tokens = base.to_bytes(8, "little") * (30 * 8) if with_tokens else None
            idx.store(f"http://w{request % 4}", [base + block for block in range(30)], "ram", base - 1, tokens)
            if request % 100 == 0:
                peak = max(peak, tracemalloc.get_traced_memory()[0] - before)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(idx) == idx.capacity
    assert max(peak, held) <= max_bytes


def tiered_index() -> PrefixIndex:
    return PrefixIndex(max_blocks=100, max_bytes=1 << 20, medium_weights={"disk": 0.7, "redis": 0.5},
                       shared_media=SHARED_MEDIA)


def test_a_lower_tier_hit_weighs_less_than_ram_and_more_than_a_miss() -> None:
    index = tiered_index()
    index.store("ram", [1, 2, 3], "ram")
    index.store("disk", [1, 2, 3], "disk")
    assert index.weighted([1, 2, 3, 4], ["ram", "disk", "none"]) == [(3, 3.0), (3, pytest.approx(2.1)), (0, 0.0)]
    index.store("disk", [1, 2], "ram")  # in RAM too: the better medium counts
    assert index.weighted([1, 2, 3], ["disk"]) == [(3, pytest.approx(2.7))]


def test_blocks_in_the_shared_tier_serve_every_candidate() -> None:
    index = tiered_index()
    index.store("a", [1, 2, 3, 4], "redis")
    index.store("b", [1, 2], "ram")
    weighted = index.weighted([1, 2, 3, 4, 5], ["a", "b", "c"])
    assert weighted == [(4, 2.0), (4, 3.0), (4, 2.0)]  # b: two in its RAM, then two from Redis
    assert index.matched([1, 2, 3, 4, 5], ["b"]) == [2]  # a is no candidate: its Redis is unseen
    index.remove("a", [3, 4], "redis")
    assert index.matched([1, 2, 3, 4], ["a", "b", "c"]) == [2, 2, 2]


def test_without_shared_media_redis_blocks_are_the_endpoints_own() -> None:
    index = PrefixIndex(max_blocks=100, max_bytes=1 << 20)
    index.store("a", [1, 2], "redis")
    assert index.weighted([1, 2], ["a", "b"]) == [(2, 2.0), (0, 0.0)]


def test_redis_blocks_count_when_reported_by_a_peer_that_is_no_candidate() -> None:
    index = tiered_index()
    index.store("prefill", [1, 2, 3], "redis")  # a prefill worker stored the prompt
    assert index.weighted([1, 2, 3], ["decode"]) == [(0, 0.0)]
    assert index.weighted([1, 2, 3], ["decode"], shared_from=["decode", "prefill"]) == [(3, 1.5)]


def test_a_peers_redis_copy_counts_when_it_weighs_more_than_the_own_copy() -> None:
    index = PrefixIndex(max_blocks=100, max_bytes=1 << 20, medium_weights={"disk": 0.3, "redis": 0.6},
                        shared_media=SHARED_MEDIA)
    index.store("a", [1, 2], "disk")
    index.store("b", [1, 2], "redis")
    assert index.weighted([1, 2], ["a"], shared_from=["a", "b"]) == [(2, pytest.approx(1.2))]
