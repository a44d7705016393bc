"""What can follow a held block: the tokens of the blocks stored after it (its children).

The ``kv`` policy tokenizes a prompt only as far as it can match (``TokenBlocks``): past
the last block some endpoint holds, it must tokenize on only where some endpoint also
holds a child of that block. Tokenizing a new message just to learn that it does not
start as that child did is the router's largest single cost (tens of microseconds per
llama.cpp call). When the workers' KV events carry the blocks' tokens (vLLM's do, and
corral's), the router keeps, per block, its children's tokens; a prompt whose text does
not start with any child's text (decoded) cannot match it, and is not tokenized.

A block's children are *known* only where every child stored since the router began to
follow the block came with its tokens (a medium that stores a child again without them,
a disk tier say, changes nothing); a new child without tokens, too many children, or a
record begun after children were already held makes the block's children unknown, and
the router tokenizes as before. So the record only ever saves work, never a match:
children that leave are not forgotten (a stale child costs a needless tokenization).

Bounded in bytes and LRU-evicted (an evicted block's children are unknown again).
"""

from __future__ import annotations

from collections import OrderedDict

#: Children recorded per block; a block with more is unknown (a branching point: tokenize).
MAX_CHILDREN = 8
#: Bytes a record costs beyond its children's tokens (key, LRU node, tuple), and per child
#: (hash, bytes object, pair): measured with tracemalloc at 1, 3 and 8 children (64-byte
#: tokens: 355, 752 and 1,757 bytes a record), rounded up.
RECORD_BYTES = 160
CHILD_BYTES = 140


class Followers:
    """Block hash -> each child block stored after it: its hash and tokens (int32 bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._records: OrderedDict[int, tuple[tuple[int, bytes], ...] | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def record(self, parent: int, child: int, tokens: bytes | None, *, had_children: bool) -> None:
        """Block ``child`` of ``parent`` was stored, with its tokens (None: not known; fine
        where the child was recorded with them before). ``had_children``: whether some
        endpoint was already believed to hold a child of ``parent``."""
        if self.max_bytes <= 0:
            return
        known = parent in self._records
        old = self._records.get(parent, None if had_children else ())
        if old is not None and any(hash_ == child for hash_, _ in old):
            self._records.move_to_end(parent)  # recorded already
            return
        if old is None or tokens is None or len(old) >= MAX_CHILDREN:
            if known:  # (absent is unknown too: nothing to keep)
                self._put(parent, None)
            return
        self._put(parent, (*old, (child, tokens)))

    def forget(self, parent: int) -> None:
        """``parent`` may have children held that will not be recorded (the index let it go:
        its children may outlive it there): unknown from now on."""
        if self.max_bytes > 0:
            self._put(parent, None)

    def _put(self, parent: int, children: tuple[tuple[int, bytes], ...] | None) -> None:
        """Set a record (most recently used), then evict the oldest down to the bound."""
        records = self._records
        if parent in records:
            self.bytes -= _cost(records.pop(parent))
        records[parent] = children
        self.bytes += _cost(children)
        while self.bytes > self.max_bytes and records:
            _, gone = records.popitem(last=False)
            self.bytes -= _cost(gone)

    def children(self, parent: int) -> list[bytes] | None:
        """The tokens of every child of ``parent`` stored so far; None where not all are known."""
        record = self._records.get(parent)
        return None if record is None else [tokens for _, tokens in record]

    def __contains__(self, parent: object) -> bool:
        return parent in self._records


def _cost(children: tuple[tuple[int, bytes], ...] | None) -> int:
    if not children:
        return RECORD_BYTES
    return RECORD_BYTES + sum(CHILD_BYTES + len(tokens) for _, tokens in children)
