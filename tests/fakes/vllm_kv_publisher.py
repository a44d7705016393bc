"""A fake vLLM KV event publisher: real ZMQ sockets on 127.0.0.1, vLLM's wire format.

    publisher = await FakeVllmPublisher.start()       # XPUB + ROUTER on free 127.0.0.1 ports
    await publisher.subscribed()                      # a subscriber's SUBSCRIBE arrived
    publisher.store([h1, h2], tokens, parent=None)    # a BlockStored batch
    publisher.remove([h2]); publisher.clear()         # BlockRemoved, AllBlocksCleared
    publisher.drop_next()                             # the next batch is buffered, not sent
    publisher.forget()                                # the replay buffer loses everything so far
    await publisher.restart()                         # a new vLLM process: seq from 0 again
    await publisher.aclose()

Each batch goes out as vLLM's ``ZmqEventPublisher`` sends it: ``(topic, seq as 8 bytes
big-endian, msgpack [ts, events, data_parallel_rank])`` with events as tagged maps (or,
``legacy=True``, tagged arrays as vLLM did before #42892). The replay socket answers
``(b"", start_seq)`` with ``(b"", seq, payload)`` for every buffered batch from
``start_seq`` on, then ``(b"", -1, b"")``. The PUB side is an XPUB socket (same wire
protocol for subscribers) so that a test can wait for the subscription instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import zmq
import zmq.asyncio

END_SEQ = (-1).to_bytes(8, "big", signed=True)


class FakeVllmPublisher:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        *,
        topic: str = "kv-events",
        legacy: bool = False,
        replay: bool = True,
        block_size: int = 16,
        host: str = "127.0.0.1",
    ) -> None:
        self._context = context
        self.host = host
        self.topic = topic.encode()
        self.legacy = legacy
        self.block_size = block_size
        self._want_replay = replay
        self.events_port = 0
        self.replay_port = 0
        self._seq = 0
        self._buffer: list[tuple[int, bytes]] = []
        self._drop = 0
        self._pub: zmq.asyncio.Socket | None = None
        self._replay: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self.replay_requests: list[int] = []

    @classmethod
    async def start(
        cls, *, events_port: int = 0, replay_port: int = 0, **kwargs: Any
    ) -> FakeVllmPublisher:
        """Bound on ``host`` (a loopback address) at these ports (0: free ones)."""
        publisher = cls(zmq.asyncio.Context(), **kwargs)
        publisher._bind(events_port, replay_port)
        return publisher

    @property
    def events_address(self) -> str:
        return f"tcp://{self.host}:{self.events_port}"

    @property
    def replay_address(self) -> str | None:
        return f"tcp://{self.host}:{self.replay_port}" if self._want_replay else None

    async def subscribed(self, timeout_s: float = 5.0) -> None:
        """Wait until a subscriber's subscription reached the publisher."""
        await asyncio.wait_for(self._subscribed.wait(), timeout_s)

    # -- events ---------------------------------------------------------------------

    def store(
        self,
        hashes: Sequence[int | bytes],
        tokens: Sequence[int],
        *,
        parent: int | bytes | None = None,
        medium: str | None = "GPU",
        lora_name: str | None = None,
        extra_keys: Sequence[Any] | None = None,
        group_idx: int | None = 0,
        kind: str | None = "full_attention",
        block_size: int | None = None,
    ) -> int:
        event = {
            "type": "BlockStored",
            "block_hashes": list(hashes),
            "parent_block_hash": parent,
            "token_ids": list(tokens),
            "block_size": block_size or self.block_size,
            "lora_id": None,
            "medium": medium,
            "lora_name": lora_name,
            "extra_keys": list(extra_keys) if extra_keys is not None else [None] * len(hashes),
            "group_idx": group_idx,
            "kv_cache_spec_kind": kind,
        }
        return self.publish([event])

    def remove(
        self,
        hashes: Sequence[int | bytes],
        *,
        medium: str | None = "GPU",
        group_idx: int | None = 0,
    ) -> int:
        event = {"type": "BlockRemoved", "block_hashes": list(hashes), "medium": medium,
                 "group_idx": group_idx}  # fmt: skip
        return self.publish([event])

    def clear(self) -> int:
        return self.publish([{"type": "AllBlocksCleared"}])

    def publish(self, events: list[dict[str, Any]], *, raw: bytes | None = None) -> int:
        """Send one batch (``raw``: these payload bytes instead); returns its seq."""
        payload = (
            raw
            if raw is not None
            else msgpack.packb([time.time(), [self._encode(e) for e in events], 0])
        )
        seq = self._seq
        self._seq += 1
        self._buffer.append((seq, payload))
        if self._drop:
            self._drop -= 1
        else:
            assert self._pub is not None
            self._pub.send_multipart([self.topic, seq.to_bytes(8, "big"), payload])
        return seq

    def drop_next(self, count: int = 1) -> None:
        """The next ``count`` batches are lost on the way (as past a high-water mark)."""
        self._drop += count

    def forget(self) -> None:
        """The replay buffer no longer holds anything published so far."""
        self._buffer.clear()

    async def restart(self) -> None:
        """A new vLLM process on the same ports: batches numbered from 0, nothing buffered."""
        self._close_sockets()
        self._seq = 0
        self._buffer.clear()
        self._subscribed.clear()
        for _ in range(50):  # the old listener may linger a moment
            try:
                self._bind(self.events_port, self.replay_port)
                return
            except zmq.ZMQError:
                self._close_sockets()
                await asyncio.sleep(0.05)
        raise RuntimeError("could not bind the same ports again")

    async def aclose(self) -> None:
        self._close_sockets()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._context.term()

    # -- internals ------------------------------------------------------------------

    def _encode(self, event: dict[str, Any]) -> Any:
        if not self.legacy:
            return event
        fields = [value for key, value in event.items() if key != "type"]
        return [event["type"], *fields]

    def _bind(self, events_port: int = 0, replay_port: int = 0) -> None:
        pub = self._context.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        self._pub = pub
        pub.bind(f"tcp://{self.host}:{events_port or '*'}")
        self.events_port = _port(pub)
        self._tasks.append(asyncio.create_task(self._watch_subscriptions(pub)))
        if self._want_replay:
            router = self._context.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            self._replay = router
            router.bind(f"tcp://{self.host}:{replay_port or '*'}")
            self.replay_port = _port(router)
            self._tasks.append(asyncio.create_task(self._serve_replay(router)))

    def _close_sockets(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sock in (self._pub, self._replay):
            if sock is not None:
                sock.close(linger=0)
        self._pub = self._replay = None

    async def _watch_subscriptions(self, pub: zmq.asyncio.Socket) -> None:
        while True:
            message = await pub.recv()
            if message[:1] == b"\x01":
                self._subscribed.set()

    async def _serve_replay(self, router: zmq.asyncio.Socket) -> None:
        while True:
            frames = await router.recv_multipart()
            if len(frames) != 3:
                continue
            client, _, start = frames
            first = int.from_bytes(start, "big")
            self.replay_requests.append(first)
            for seq, payload in list(self._buffer):
                if seq >= first:
                    await router.send_multipart([client, b"", seq.to_bytes(8, "big"), payload])
            await router.send_multipart([client, b"", END_SEQ, b""])


def _port(sock: zmq.asyncio.Socket) -> int:
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return int(endpoint.decode().rsplit(":", 1)[1])
