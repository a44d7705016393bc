"""Following vLLM's ZMQ KV events into the index: formats, hashes, gaps, restarts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgpack
import pytest
from tests.fakes.vllm_kv_publisher import FakeVllmPublisher
from tests.router.support import eventually

from corral.config import parse_stack
from corral.prefix.hashing import block_hashes, token_bytes
from corral.prefix.index import PrefixIndex
from corral.router.vllm_kv_events import (
    Batch,
    BlockTranslator,
    Cleared,
    Malformed,
    Removed,
    Stored,
    VllmKVEventSubscriber,
    VllmTarget,
    decode_batch,
    vllm_target,
)

URL = "http://10.0.0.7:8000"
MODEL = "llama"
BS = 16
#: Three blocks of a prompt, and a second prompt sharing none of them.
TOKENS = list(range(100, 148))
OTHER = list(range(500, 532))


def corral(tokens: list[int], block_size: int = BS) -> list[int]:
    """What the router computes for a prompt of ``tokens``."""
    return block_hashes(tokens, block_size=block_size, seed=MODEL)


def held(index: PrefixIndex, tokens: list[int], url: str = URL) -> int:
    return index.matched(corral(tokens), [url])[0]


def new_index() -> PrefixIndex:
    return PrefixIndex(max_blocks=10_000, max_bytes=1 << 24, children_tokens=True)


# -- decoding and translation, no sockets ----------------------------------------------


def _translator(
    index: PrefixIndex, *, block_size: int = BS, max_blocks: int = 1000
) -> BlockTranslator:
    return BlockTranslator(index, URL, model=MODEL, block_size=block_size, max_blocks=max_blocks)


def _stored(hashes, tokens, parent=None, **kwargs) -> Batch:
    return Batch(
        1.0, (Stored(tuple(hashes), parent, tuple(tokens), kwargs.pop("block_size", BS), **kwargs),)
    )


def test_map_and_array_batches_decode_the_same():
    fields = {"block_hashes": [7, 8], "parent_block_hash": None, "token_ids": TOKENS[:32], "block_size": 16,
              "lora_id": None, "medium": "GPU", "lora_name": None, "extra_keys": [None, None], "group_idx": 0,
              "kv_cache_spec_kind": "full_attention"}  # fmt: skip
    as_map = msgpack.packb(
        [1.5, [{"type": "BlockStored", **fields}, {"type": "AllBlocksCleared"}], 0]
    )
    as_array = msgpack.packb([1.5, [["BlockStored", *fields.values()], ["AllBlocksCleared"]], 0])
    oldest = msgpack.packb(
        [1.5, [["BlockStored", [7, 8], None, TOKENS[:32], 16, None], ["BlockRemoved", [8]]]]
    )
    expected = Stored(
        (7, 8), None, tuple(TOKENS[:32]), 16, "GPU", False, (None, None), 0, "full_attention"
    )
    assert decode_batch(as_map) == decode_batch(as_array) == Batch(1.5, (expected, Cleared()))
    assert decode_batch(oldest).events == (
        Stored((7, 8), None, tuple(TOKENS[:32]), 16),
        Removed((8,)),
    )
    as_dict_batch = msgpack.packb(
        {"ts": 2, "events": [{"type": "BlockRemoved", "block_hashes": [b"\x01"]}]}
    )
    assert decode_batch(as_dict_batch) == Batch(2.0, (Removed((b"\x01",)),))


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",
        msgpack.packb("batch"),
        msgpack.packb([1.0, [{"type": "BlockMoved"}]]),
        msgpack.packb(
            [
                1.0,
                [
                    {
                        "type": "BlockStored",
                        "block_hashes": [1],
                        "token_ids": [1, 2],
                        "block_size": 16,
                    }
                ],
            ]
        ),
        msgpack.packb([1.0, [{"type": "BlockRemoved", "block_hashes": [1.5]}]]),
        msgpack.packb(["now", []]),
    ],
)
def test_malformed_batches_are_refused(payload):
    with pytest.raises(Malformed):
        decode_batch(payload)


def test_stored_blocks_get_the_routers_hashes_and_chain_on_their_parent():
    index = new_index()
    translator = _translator(index)
    translator.apply(_stored([11, 12], TOKENS[:32]))
    translator.apply(_stored([13], TOKENS[32:48], parent=12))
    assert held(index, TOKENS) == 3
    assert index.extended(corral(TOKENS)[1])  # the router knows to look past block 2
    translator.apply(Batch(2.0, (Removed((13,)),)))
    assert held(index, TOKENS) == 2 and len(translator) == 2
    translator.apply(Batch(3.0, (Cleared(),)))
    assert held(index, TOKENS) == 0 and len(translator) == 0


def test_larger_vllm_blocks_become_several_router_blocks():
    index = new_index()
    translator = _translator(index)
    translator.apply(_stored([21], TOKENS[:32], block_size=32))
    assert held(index, TOKENS) == 2
    # each router block is known as its parent's child, with its tokens
    assert index.followers.children(corral(TOKENS)[0]) == [token_bytes(TOKENS[16:32])]
    translator.apply(Batch(2.0, (Removed((21,)),)))
    assert held(index, TOKENS) == 0
    translator.apply(_stored([22], TOKENS[:24], block_size=24))  # not whole router blocks: skipped
    assert held(index, TOKENS) == 0 and translator.stats.skipped_blocks == 1


def test_blocks_no_prompt_could_match_are_skipped():
    index = new_index()
    translator = _translator(index)
    translator.apply(_stored([31], TOKENS[:16], lora=True))
    translator.apply(_stored([32, 33], TOKENS[:32], extra_keys=(None, ("salt",))))
    assert held(index, TOKENS) == 1  # the first block, up to the salted one
    translator.apply(_stored([34], TOKENS[32:48], parent=999))  # unknown parent
    translator.apply(_stored([35], OTHER[:16], medium="DISK"))
    assert held(index, OTHER) == 0
    assert translator.stats.skipped_blocks == 1 + 1 + 1 + 1


def test_a_sliding_window_group_is_ignored_and_cannot_remove_full_attention_blocks():
    index = new_index()
    translator = _translator(index)
    translator.apply(_stored([41], TOKENS[:16], group=0, kind="full_attention"))
    translator.apply(_stored([41], TOKENS[:16], group=1, kind="sliding_window"))
    translator.apply(Batch(2.0, (Removed((41,), "GPU", 1),)))
    assert held(index, TOKENS) == 1
    translator.apply(Batch(3.0, (Removed((41,), "GPU", 0),)))
    assert held(index, TOKENS) == 0


def test_a_block_offloaded_to_cpu_is_held_until_both_copies_go():
    index = new_index()
    translator = _translator(index)
    translator.apply(_stored([51], TOKENS[:16], medium="GPU"))
    translator.apply(_stored([51], TOKENS[:16], medium="CPU"))
    translator.apply(Batch(2.0, (Removed((51,), "GPU"),)))
    assert held(index, TOKENS) == 1  # still offloaded to CPU
    translator.apply(Batch(3.0, (Removed((51,), "CPU"),)))
    assert held(index, TOKENS) == 0 and len(translator) == 0


def test_the_hash_map_is_bounded_and_what_it_forgets_leaves_the_index():
    index = new_index()
    translator = _translator(index, max_blocks=2)
    translator.apply(_stored([61], TOKENS[:16]))
    translator.apply(_stored([62], OTHER[:16]))
    translator.apply(_stored([63], TOKENS[16:32], parent=61))
    assert (
        len(translator) == 2 and held(index, TOKENS) == 0
    )  # block 61 went: its chain cannot match
    assert held(index, OTHER) == 1


def test_targets_come_from_the_endpoint_host_and_the_models_ports():
    stack = parse_stack({"models": [{"name": MODEL, "task": "chat", "engine": "vllm", "source": "x",
                                     "replicas": 0, "endpoints": [URL],
                                     "vllm": {"kv_events_port": 6001, "kv_events_replay_port": None}}]})  # fmt: skip
    assert vllm_target(URL, stack.models[0]) == VllmTarget(URL, MODEL, "tcp://10.0.0.7:6001", None)
    default = stack.models[0].model_copy(update={"vllm": None})
    assert vllm_target("http://[fd00::5]:8000", default).events == "tcp://[fd00::5]:5557"
    assert vllm_target("http://[fd00::5]:8000", default).replay == "tcp://[fd00::5]:5558"


# -- over real sockets ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def following(
    publisher: FakeVllmPublisher, *, wait: bool = True
) -> AsyncIterator[tuple[VllmKVEventSubscriber, PrefixIndex]]:
    index = new_index()
    target = VllmTarget(URL, MODEL, publisher.events_address, publisher.replay_address)
    subscriber = VllmKVEventSubscriber(
        index,
        lambda: [target],
        block_size=BS,
        sync_interval_s=0.05,
        replay_timeout_s=1.0,
        retry_s=0.05,
    )
    subscriber.start()
    try:
        if wait:
            await publisher.subscribed()
        yield subscriber, index
    finally:
        await subscriber.aclose()


@contextlib.asynccontextmanager
async def publishing(**kwargs) -> AsyncIterator[FakeVllmPublisher]:
    publisher = await FakeVllmPublisher.start(**kwargs)
    try:
        yield publisher
    finally:
        await publisher.aclose()


@pytest.mark.parametrize("legacy", [False, True])
async def test_stored_removed_cleared_over_zmq(legacy):
    async with publishing(legacy=legacy) as publisher, following(publisher) as (subscriber, index):
        publisher.store([1, 2], TOKENS[:32])
        publisher.store([3], TOKENS[32:], parent=2)
        await eventually(lambda: held(index, TOKENS) == 3)
        publisher.remove([3])
        await eventually(lambda: held(index, TOKENS) == 2)
        publisher.clear()
        publisher.store([b"\x09" * 32], OTHER[:16])  # newer vLLMs may send bytes hashes
        await eventually(lambda: held(index, OTHER) == 1)
        assert held(index, TOKENS) == 0
        assert subscriber.translators[URL].stats.resets == 0


async def test_a_new_subscriber_catches_up_from_the_replay_buffer():
    async with publishing() as publisher:
        publisher.store([1, 2], TOKENS[:32])  # before anyone listens
        async with following(publisher) as (_, index):
            await eventually(lambda: held(index, TOKENS) == 2)
            assert publisher.replay_requests == [0]
            publisher.store([3], TOKENS[32:], parent=2)
            await eventually(lambda: held(index, TOKENS) == 3)


async def test_a_gap_is_filled_from_the_replay_socket():
    async with publishing() as publisher, following(publisher) as (subscriber, index):
        publisher.store([1], TOKENS[:16])
        await eventually(lambda: held(index, TOKENS) == 1)
        publisher.drop_next()
        publisher.store([2], TOKENS[16:32], parent=1)  # lost on the way
        publisher.store([3], TOKENS[32:], parent=2)
        await eventually(lambda: held(index, TOKENS) == 3)
        stats = subscriber.translators[URL].stats
        assert stats.resets == 0 and publisher.replay_requests[-1] == 1


async def test_a_gap_the_replay_cannot_fill_drops_the_endpoints_blocks():
    async with publishing() as publisher, following(publisher) as (subscriber, index):
        publisher.store([1], TOKENS[:16])
        await eventually(lambda: held(index, TOKENS) == 1)
        publisher.drop_next()
        publisher.store([2], TOKENS[16:32], parent=1)
        publisher.forget()  # past the replay buffer
        publisher.store([9], OTHER[:16])
        await eventually(lambda: held(index, OTHER) == 1)
        assert held(index, TOKENS) == 0  # no longer vouched for
        assert subscriber.translators[URL].stats.resets == 1


async def test_without_a_replay_socket_a_gap_resets():
    async with publishing(replay=False) as publisher, following(publisher) as (_, index):
        publisher.store([1], TOKENS[:16])
        await eventually(lambda: held(index, TOKENS) == 1)
        publisher.drop_next()
        publisher.store([2], TOKENS[16:32], parent=1)
        publisher.store([9], OTHER[:16])
        await eventually(lambda: held(index, OTHER) == 1)
        assert held(index, TOKENS) == 0


async def test_a_restarted_publisher_starts_the_endpoint_over():
    async with publishing() as publisher, following(publisher) as (subscriber, index):
        publisher.store([1, 2], TOKENS[:32])
        publisher.store([3], TOKENS[32:], parent=2)
        await eventually(lambda: held(index, TOKENS) == 3)
        await publisher.restart()  # seq 0 again; its cache is empty
        await publisher.subscribed()
        publisher.store([7], OTHER[:16])
        await eventually(lambda: held(index, OTHER) == 1)
        assert held(index, TOKENS) == 0
        assert subscriber.translators[URL].stats.resets == 1


async def test_a_malformed_batch_drops_the_endpoints_blocks_and_following_goes_on():
    async with publishing() as publisher, following(publisher) as (subscriber, index):
        publisher.store([1], TOKENS[:16])
        await eventually(lambda: held(index, TOKENS) == 1)
        publisher.publish([], raw=b"\xc1 not msgpack")
        publisher.store([9], OTHER[:16])
        await eventually(lambda: held(index, OTHER) == 1)
        assert held(index, TOKENS) == 0
        assert subscriber.translators[URL].stats.resets == 1


async def test_endpoints_that_leave_are_forgotten():
    async with publishing() as publisher:
        index = new_index()
        targets = [VllmTarget(URL, MODEL, publisher.events_address, publisher.replay_address)]
        subscriber = VllmKVEventSubscriber(
            index, lambda: list(targets), block_size=BS, sync_interval_s=0.01
        )
        subscriber.start()
        try:
            await publisher.subscribed()
            publisher.store([1], TOKENS[:16])
            await eventually(lambda: held(index, TOKENS) == 1)
            targets.clear()
            await eventually(lambda: subscriber.following == [])
            assert held(index, TOKENS) == 0
        finally:
            await subscriber.aclose()
