"""KV events: which prefix blocks a worker holds, as numbered batches (vLLM's schema, in JSON).

A worker publishes them on ``GET /v1/kv/events`` (server-sent events, one batch per
``data:`` frame) and answers ``GET /v1/kv/blocks`` with its current snapshot batch::

    {"seq": 7, "ts": 1718000000.25, "events": [
        {"type": "AllBlocksCleared"},
        {"type": "BlockStored", "block_hashes": [h1, h2, h3], "parent_block_hash": null,
         "block_size": 16, "medium": "ram"},
        {"type": "BlockStored", "block_hashes": [h4], "parent_block_hash": h2,
         "block_size": 16, "medium": "ram"},
        {"type": "BlockRemoved", "block_hashes": [h4], "medium": "ram"}]}

- Hashes are :func:`corral.prefix.hashing.block_hashes` of the prompt's token ids, with the
  stack's ``prefix.block_size`` and the model's ``name`` as seed: unsigned 64-bit integers.
  A router that hashes a tokenized prompt the same way finds the blocks it has in common.
- ``BlockStored``: the worker began to hold these blocks. ``block_hashes`` is a chain (each
  block is the parent of the next); ``parent_block_hash`` is the block before the first, or
  ``null`` when the first is the first block of a prompt. Parents are always stored first.
  ``token_ids`` (optional, as in vLLM): the blocks' tokens, ``block_size`` per block. With
  them the router knows what text could follow a block it holds, and need not tokenize a
  prompt whose text cannot (:mod:`corral.prefix.followers`).
- ``BlockRemoved``: the worker no longer holds these blocks in ``medium`` (it may still hold
  them in another). A worker keeps one count per block and medium over everything that
  holds it, so a block shared by two stored prefixes is removed only when the last of them
  goes.
- ``AllBlocksCleared``: forget every block of this worker.
- ``medium``: where the blocks are. ``"ram"``: in the worker's memory, servable without a
  prefill (llama.cpp's live context, or the worker's prefix store). ``"disk"``: in the
  worker's local disk tier (a file read, then no prefill). ``"redis"``: in the stack's
  shared Redis tier, written by this worker (a network read; every worker of the model can
  load it, but each publishes only what it wrote). A block may be held in several media at
  once: each medium has its own ``BlockStored`` / ``BlockRemoved``.
- ``seq`` counts batches per worker process, from 1, by one; ``ts`` is the wall clock
  (``time.time()``) when the batch was made.

A stream opens with a snapshot: one batch of ``AllBlocksCleared`` and then ``BlockStored``
for every block held, whose ``seq`` is that of the last batch it reflects. Live batches
follow, ``seq + 1``, ``seq + 2``, ... A gap in ``seq``, a restarted worker (``seq`` going
down) or a closed stream means: reconnect, which yields a fresh snapshot. That is the
whole resync protocol; a subscriber that reads too slowly is disconnected on purpose.

Differences from vLLM's ``EventBatch`` (msgpack over ZMQ): JSON over SSE, a ``"type"`` field
instead of msgpack's tagged arrays, the sequence number inside the batch, and no
``lora_name`` in ``BlockStored``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Blocks held in the worker's memory (its live context or its RAM prefix store).
MEDIUM_RAM = "ram"
#: Blocks held in the worker's local disk tier (corral.worker.kvstore.disk).
MEDIUM_DISK = "disk"
#: Blocks this worker wrote to the stack's shared Redis tier (corral.worker.kvstore.redis_tier).
MEDIUM_REDIS = "redis"


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    block_size: int
    medium: str = MEDIUM_RAM
    #: The blocks' tokens, ``block_size`` per block (None: not published).
    token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.token_ids is not None and len(self.token_ids) != len(self.block_hashes) * self.block_size:
            raise ValueError(
                f"'token_ids' must hold block_size x blocks = "
                f"{len(self.block_hashes) * self.block_size} tokens, not {len(self.token_ids)}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "type": "BlockStored",
            "block_hashes": list(self.block_hashes),
            "parent_block_hash": self.parent_block_hash,
            "block_size": self.block_size,
            "medium": self.medium,
        }
        if self.token_ids is not None:
            data["token_ids"] = list(self.token_ids)
        return data


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: tuple[int, ...]
    medium: str = MEDIUM_RAM

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "BlockRemoved",
            "block_hashes": list(self.block_hashes),
            "medium": self.medium,
        }


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    def to_dict(self) -> dict[str, Any]:
        return {"type": "AllBlocksCleared"}


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    seq: int
    ts: float
    events: tuple[KVEvent, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "events": [e.to_dict() for e in self.events]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventBatch:
        """Parse one batch (unknown keys are ignored); ValueError names what is wrong."""
        events = data.get("events")
        if not isinstance(events, list):
            raise ValueError("a KV event batch needs an 'events' list")
        return cls(
            _int(data, "seq"),
            _number(data, "ts"),
            tuple(event_from_dict(event) for event in events),
        )


def event_from_dict(data: Any) -> KVEvent:
    """One event from its dict; ValueError for an unknown type or a bad field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a KV event must be an object, not {type(data).__name__}")
    kind = data.get("type")
    if kind == "BlockStored":
        parent = data.get("parent_block_hash")
        hashes, block_size, tokens = _hashes(data), _int(data, "block_size"), _tokens(data)
        if tokens is not None and len(tokens) != len(hashes) * block_size:
            tokens = None  # not one block's worth each: the blocks count, their tokens do not
        return BlockStored(
            hashes, None if parent is None else _hash(parent), block_size, _medium(data), tokens
        )
    if kind == "BlockRemoved":
        return BlockRemoved(_hashes(data), _medium(data))
    if kind == "AllBlocksCleared":
        return AllBlocksCleared()
    raise ValueError(f"unknown KV event type {kind!r}")


def _hash(value: Any) -> int:
    if type(value) is not int or not 0 <= value < 2**64:
        raise ValueError(f"a block hash must be an unsigned 64-bit integer, not {value!r}")
    return value


def _hashes(data: Mapping[str, Any]) -> tuple[int, ...]:
    value = data.get("block_hashes")
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError("'block_hashes' must be a list of integers")
    return tuple(_hash(item) for item in value)


def _tokens(data: Mapping[str, Any]) -> tuple[int, ...] | None:
    value = data.get("token_ids")
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError("'token_ids' must be a list of integers")
    if not all(type(token) is int and 0 <= token < 2**31 for token in value):
        raise ValueError("'token_ids' must be token ids (integers from 0 to 2**31 - 1)")
    return tuple(value)


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if type(value) is not int:
        raise ValueError(f"'{key}' must be an integer, not {value!r}")
    return value


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{key}' must be a number, not {value!r}")
    return float(value)


def _medium(data: Mapping[str, Any]) -> str:
    value = data.get("medium", MEDIUM_RAM)
    if not isinstance(value, str):
        raise ValueError(f"'medium' must be a string, not {value!r}")
    return value
