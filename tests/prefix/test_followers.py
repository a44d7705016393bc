"""What can follow a held block: children's tokens, known only where all of them are."""

from __future__ import annotations

from corral.prefix.followers import CHILD_BYTES, MAX_CHILDREN, RECORD_BYTES, Followers
from corral.prefix.index import PrefixIndex


def test_children_with_tokens_are_known() -> None:
    followers = Followers(1 << 20)
    assert followers.children(1) is None  # never seen: unknown
    followers.record(1, 10, b"a" * 64, had_children=False)
    followers.record(1, 11, b"b" * 64, had_children=False)
    followers.record(1, 10, b"a" * 64, had_children=True)  # the same child again
    assert followers.children(1) == [b"a" * 64, b"b" * 64]


def test_a_known_child_stored_again_without_tokens_changes_nothing() -> None:
    followers = Followers(1 << 20)
    followers.record(1, 10, b"a" * 64, had_children=False)
    followers.record(1, 10, None, had_children=True)  # e.g. the disk tier wrote it too
    assert followers.children(1) == [b"a" * 64]


def test_what_is_not_all_known_is_unknown() -> None:
    followers = Followers(1 << 20)
    followers.record(1, 10, b"a" * 64, had_children=False)
    followers.record(1, 11, None, had_children=True)  # a new child without tokens
    assert followers.children(1) is None
    followers.record(1, 12, b"c" * 64, had_children=True)
    assert followers.children(1) is None  # stays unknown

    followers.record(2, 20, b"a" * 64, had_children=True)  # children before the record
    assert followers.children(2) is None
    assert 2 not in followers  # nothing worth keeping

    for child in range(MAX_CHILDREN + 1):  # a branching point
        followers.record(3, 100 + child, bytes([child]) * 64, had_children=child > 0)
    assert followers.children(3) is None


def test_the_records_stay_within_their_bytes_least_recently_used_out() -> None:
    per_record = RECORD_BYTES + CHILD_BYTES + 64
    followers = Followers(10 * per_record)
    for parent in range(100):
        followers.record(parent, parent + 1000, b"x" * 64, had_children=False)
        assert followers.bytes <= followers.max_bytes
    assert len(followers) == 10
    assert followers.children(99) == [b"x" * 64] and followers.children(89) is None


def test_the_index_records_each_stored_block_under_its_parent() -> None:
    index = PrefixIndex(max_blocks=1000, max_bytes=1 << 20, children_tokens=True)
    tokens = bytes(range(48))  # three blocks of four int32 tokens
    index.store("http://a", [11, 12, 13], "ram", None, tokens)
    assert index.followers.children(11) == [tokens[16:32]]
    assert index.followers.children(12) == [tokens[32:48]]
    assert index.followers.children(13) is None  # no child yet
    index.store("http://b", [14], "ram", 11, b"\x07" * 16)
    assert index.followers.children(11) == [tokens[16:32], b"\x07" * 16]
    index.store("http://b", [15], "disk", 13)  # a child without tokens, not known before
    assert index.followers.children(13) is None
    index.store("http://a", [16], "ram", 99, b"\x01" * 16)  # an unknown parent with a child
    assert index.followers.children(99) == [b"\x01" * 16]
    index.store("http://a", [17, 18, 19], "ram", 99, b"\x01" * 16)  # tokens that do not fit
    assert index.followers.children(99) is None


def test_a_block_the_index_lets_go_has_unknown_children_when_stored_again() -> None:
    """Parents are older than their children, so the index evicts a parent first; its
    children may still be held. Stored again later, it must not be known by one child."""
    index = PrefixIndex(max_blocks=3, max_bytes=1 << 20, children_tokens=True)
    index.store("http://a", [1, 2], "ram", None, b"\x01" * 32)  # 2 is a child of 1
    index.store("http://a", [3, 4], "ram", None, b"\x02" * 32)  # over capacity: 1 goes
    assert index.blocks("http://a") == 3
    assert index.followers.children(1) is None
    index.store("http://a", [1, 5], "ram", None, b"\x03" * 32)  # 1 again, with another child
    assert index.followers.children(1) is None  # 2 may still be held: unknown
