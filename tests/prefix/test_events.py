"""The KV event schema shared by the workers (producers) and the router (consumer)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from corral.prefix.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    event_from_dict,
)


def test_a_batch_survives_json_both_ways() -> None:
    batch = EventBatch(
        7,
        1718000000.25,
        (
            AllBlocksCleared(),
            BlockStored((1, 2**64 - 1), None, 16),
            BlockStored((3,), 2**64 - 1, 16, "ram"),
            BlockRemoved((3,)),
        ),
    )
    wire = orjson.loads(orjson.dumps(batch.to_dict()))
    assert wire["events"][1] == {
        "type": "BlockStored",
        "block_hashes": [1, 2**64 - 1],
        "parent_block_hash": None,
        "block_size": 16,
        "medium": "ram",
    }
    assert EventBatch.from_dict(wire) == batch


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"type": "BlockExploded"}, "unknown KV event type"),
        ({"type": "BlockRemoved", "block_hashes": [-1]}, "unsigned 64-bit"),
        ({"type": "BlockRemoved", "block_hashes": [2**64]}, "unsigned 64-bit"),
        ({"type": "BlockRemoved", "block_hashes": "12"}, "list of integers"),
        ({"type": "BlockStored", "block_hashes": [1], "block_size": "16"}, "'block_size'"),
        ([1, 2], "must be an object"),
    ],
)
def test_malformed_events_say_what_is_wrong(event: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        event_from_dict(event)


def test_malformed_batches_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="'events' list"):
        EventBatch.from_dict({"seq": 1, "ts": 0.0})
    with pytest.raises(ValueError, match="'seq'"):
        EventBatch.from_dict({"seq": True, "ts": 0.0, "events": []})
    with pytest.raises(ValueError, match="'ts'"):
        EventBatch.from_dict({"seq": 1, "ts": "now", "events": []})


def test_stored_blocks_may_carry_their_tokens() -> None:
    stored = BlockStored((1, 2), None, 2, "ram", (5, 6, 7, 8))
    wire = orjson.loads(orjson.dumps(stored.to_dict()))
    assert wire["token_ids"] == [5, 6, 7, 8]
    assert event_from_dict(wire) == stored
    assert "token_ids" not in BlockStored((1,), None, 2).to_dict()  # not published: left out


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([5, 6, 7, -1], "token ids"),
        ([5, 6, 7, "8"], "token ids"),
        ("5678", "list of integers"),
    ],
)
def test_bad_token_ids_say_what_is_wrong(tokens: Any, message: str) -> None:
    event = {"type": "BlockStored", "block_hashes": [1, 2], "block_size": 2, "token_ids": tokens}
    with pytest.raises(ValueError, match=message):
        event_from_dict(event)


def test_token_ids_of_the_wrong_length_are_dropped_not_the_blocks() -> None:
    event = {"type": "BlockStored", "block_hashes": [1, 2], "block_size": 2, "token_ids": [5, 6, 7]}
    assert event_from_dict(event) == BlockStored((1, 2), None, 2)  # no resync over it
    with pytest.raises(ValueError, match="block_size x blocks = 4 tokens, not 3"):
        BlockStored((1, 2), None, 2, token_ids=(5, 6, 7))  # a producer's mistake
