"""PrefixStore: the byte-bounded LRU of prefix states (pure bookkeeping)."""

from __future__ import annotations

import pytest

from corral.prefix.hashing import block_hashes
from corral.worker.prefix_store import PrefixStore

BLOCK = 4


def chain(tokens: list[int]) -> list[int]:
    return block_hashes(tokens, block_size=BLOCK, seed="m")


SYSTEM = list(range(100, 108))  # two blocks every conversation starts with
A2 = SYSTEM + list(range(8))  # user A, two rounds: four blocks
A3 = A2 + list(range(20, 28))  # user A, three rounds: six blocks
B2 = SYSTEM + list(range(50, 58))


def test_the_longest_match_wins_and_a_longer_entry_matches_a_shorter_prompt() -> None:
    store: PrefixStore[str] = PrefixStore(1000)
    store.put(chain(B2), "b2", 10)
    store.put(chain(A3), "a3", 10)
    match = store.longest_match(chain([*A2, 9, 9, 9, 9]))
    assert match is not None
    assert (match.entry.value, match.blocks) == ("a3", 4)  # A3 holds A2's four blocks
    match = store.longest_match(chain([*SYSTEM, 7, 7, 7, 7]))
    assert match is not None and match.blocks == 2  # only the system prompt is shared
    assert store.longest_match(chain([1, 2, 3, 4, 5, 6, 7, 8])) is None
    assert store.longest_match([]) is None


def test_on_a_tie_the_smallest_entry_is_chosen() -> None:
    store: PrefixStore[str] = PrefixStore(1000)
    store.put(chain(A3), "a3", 30)
    store.put(chain(B2), "b2", 20)
    match = store.longest_match(chain(SYSTEM))
    assert match is not None and (match.entry.value, match.blocks) == ("b2", 2)


def test_put_evicts_least_recently_used_entries_to_stay_under_capacity() -> None:
    store: PrefixStore[str] = PrefixStore(25)
    store.put(chain(A2), "a2", 10)
    store.put(chain(B2), "b2", 10)
    assert store.longest_match(chain(A2)) is not None  # a use: A2 is now the newest
    put = store.put(chain([1] * 8), "c", 10)
    assert put.stored is not None and put.stored.value == "c"
    assert [entry.value for entry in put.removed] == ["b2"]
    assert (len(store), store.nbytes) == (2, 20)
    assert [entry.value for entry in store.entries()] == ["a2", "c"]


def test_a_new_chain_replaces_the_entries_it_contains() -> None:
    store: PrefixStore[str] = PrefixStore(1000)
    store.put(chain(A2), "a2", 10)
    put = store.put(chain(A3), "a3", 15)
    assert [entry.value for entry in put.removed] == ["a2"]
    assert (len(store), store.nbytes, store.blocks) == (1, 15, 6)


def test_a_chain_already_held_or_too_large_is_refused() -> None:
    store: PrefixStore[str] = PrefixStore(100)
    store.put(chain(A3), "a3", 10)
    assert store.put(chain(A2), "a2", 10) == (None, ())  # A3 holds it already
    assert store.put(chain(B2), "b2", 101) == (None, ())
    assert [entry.value for entry in store.entries()] == ["a3"]


def test_blocks_shared_by_two_entries_stay_held_until_both_are_gone() -> None:
    store: PrefixStore[str] = PrefixStore(1000)
    a, b = store.put(chain(A2), "a2", 10).stored, store.put(chain(B2), "b2", 10).stored
    assert a is not None and b is not None
    assert store.blocks == 6  # 2 shared + 2 + 2
    store.remove(a.key)
    assert store.holds(chain(SYSTEM)[-1]) and not store.holds(a.key)
    store.remove(b.key)
    assert (store.blocks, store.nbytes, store.holds(chain(SYSTEM)[0])) == (0, 0, False)
    assert store.remove(b.key) is None


def test_clear_and_a_zero_capacity() -> None:
    store: PrefixStore[str] = PrefixStore(0)
    assert store.put(chain(A2), "a2", 1).stored is None
    store.capacity_bytes = 10
    store.put(chain(A2), "a2", 1)
    assert [entry.value for entry in store.clear()] == ["a2"]
    assert (len(store), store.blocks, store.nbytes) == (0, 0, 0)
    with pytest.raises(ValueError):
        store.put([], "empty", 1)
    with pytest.raises(ValueError):
        PrefixStore(-1)
