"""Sending the workload: arrivals, the concurrency cap, and raw per-read timestamps.

Cheap on purpose (it must not be the bottleneck): one aiohttp session, bodies serialized
with orjson, and per socket read only ``(perf_counter(), bytes)`` appended to a list.
Nothing is parsed while a stream is open; see records.py. The one exception is
multi-round conversations, whose round r+1 needs round r's answer: that answer is parsed
once the round has ended.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from time import perf_counter
from typing import Any, Literal

import aiohttp
import numpy as np
import orjson

from corral.bench.records import Exchange, parse_exchange
from corral.bench.workload import Conversation, Turn, arrival_offsets, open_arrivals

Endpoint = Literal["chat", "completions"]
PATHS: dict[str, str] = {"chat": "/chat/completions", "completions": "/completions"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to send: ``api_url`` is the OpenAI root, e.g. http://127.0.0.1:8000/v1."""

    api_url: str
    model: str
    endpoint: Endpoint = "chat"
    api_key: str | None = None
    ignore_eos: bool = False
    timeout_s: float = 600.0

    @property
    def url(self) -> str:
        return self.api_url + PATHS[self.endpoint]

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True, slots=True)
class LoadSpec:
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    #: Run for this long instead of once through the workload (conversations then repeat).
    duration_s: float | None = None
    seed: int = 0


@dataclass(slots=True)
class RunState:
    """Counters for the live view, touched once per request (never per chunk)."""

    total: int | None = None
    sent: int = 0
    done: int = 0
    failed: int = 0
    started_s: float | None = None
    duration_s: float | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def throughput(self, now: float, window_s: float = 5.0) -> float:
        """Completed requests per second over the last ``window_s`` seconds."""
        while self.recent and self.recent[0] < now - window_s:
            self.recent.popleft()
        if self.started_s is None:
            return 0.0
        return len(self.recent) / max(min(window_s, now - self.started_s), 1e-9)


@dataclass(slots=True)
class RunOutput:
    exchanges: list[Exchange]
    started_s: float
    ended_s: float
    #: Release times of the conversations (absolute perf_counter seconds).
    arrivals_s: list[float]

    @property
    def duration_s(self) -> float:
        return self.ended_s - self.started_s


def request_body(target: Target, conv: Conversation, history: Sequence[str], turn: Turn) -> bytes:
    """The streamed request; ``history`` alternates user and assistant texts."""
    body: dict[str, Any] = {"model": target.model}
    if target.endpoint == "chat":
        messages = [{"role": "system", "content": conv.system}] if conv.system else []
        messages += [
            {"role": "assistant" if i % 2 else "user", "content": text}
            for i, text in enumerate(history)
        ]
        messages.append({"role": "user", "content": turn.text})
        body["messages"] = messages
    else:
        body["prompt"] = prompt_text(conv, history, turn)
    body |= {
        "max_tokens": turn.output_len,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }
    if conv.user:
        body["user"] = conv.user
    if target.ignore_eos:
        body["ignore_eos"] = True
    return orjson.dumps(body)


def prompt_text(conv: Conversation, history: Sequence[str], turn: Turn) -> str:
    """The whole prompt as one text (the completions prompt; what is counted for chat too)."""
    parts = ([conv.system] if conv.system else []) + list(history) + [turn.text]
    return "\n\n".join(parts)


class StreamClient:
    """POSTs a body and records the stream's reads. One per run; the session is shared."""

    def __init__(self, session: aiohttp.ClientSession, target: Target) -> None:
        self._session = session
        self._url = target.url
        self._headers = target.headers()

    async def send(self, body: bytes, ex: Exchange) -> None:
        reads = ex.reads
        clock = perf_counter
        ex.start_s = clock()
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as response:
                ex.status = response.status
                content = response.content
                while data := await content.readany():
                    reads.append((clock(), data))
        except TimeoutError as exc:
            ex.error, ex.error_detail = "timeout", str(exc) or "request timed out"
        except aiohttp.ClientConnectorError as exc:
            ex.error, ex.error_detail = "connect", str(exc)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            ex.error, ex.error_detail = "disconnected", str(exc)
        except aiohttp.ClientError as exc:
            ex.error, ex.error_detail = "client_error", f"{type(exc).__name__}: {exc}"
        ex.end_s = clock()


def new_session(max_concurrency: int | None, timeout_s: float) -> aiohttp.ClientSession:
    """The one HTTP session of a benchmark process."""
    connector = aiohttp.TCPConnector(limit=max_concurrency or 0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=30)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


class Runner:
    """Runs conversations under a :class:`LoadSpec`; see run()."""

    def __init__(
        self, client: StreamClient, target: Target, load: LoadSpec, state: RunState | None = None
    ) -> None:
        self._client = client
        self._target = target
        self._load = load
        self.state = state or RunState()
        self._slots = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None
        self._exchanges: list[Exchange] = []
        self._deadline: float | None = None

    async def run(self, conversations: Sequence[Conversation]) -> RunOutput:
        """Once through ``conversations`` at the load's arrivals, or, with a duration,
        repeating them until the duration is over (requests in flight then finish)."""
        load = self._load
        rng = np.random.default_rng(load.seed)
        if load.duration_s is None:
            offsets = arrival_offsets(len(conversations), load.request_rate, load.burstiness, rng)
            self.state.total = sum(len(c.turns) for c in conversations)
        elif math.isinf(load.request_rate):
            offsets = None
        else:
            offsets = open_arrivals(load.request_rate, load.burstiness, rng, load.duration_s)
        started = perf_counter()
        self.state.started_s, self.state.duration_s = started, load.duration_s
        if load.duration_s is not None:
            self._deadline = started + load.duration_s
        stream = _cycle(conversations)
        if offsets is None:
            arrivals = await self._closed_loop(stream, started)
        else:
            arrivals = await self._open_loop(stream, offsets, started)
        return RunOutput(self._exchanges, started, perf_counter(), arrivals)

    async def _open_loop(
        self, stream: Iterator[tuple[int, Conversation]], offsets: np.ndarray, started: float
    ) -> list[float]:
        tasks, arrivals = [], []
        for offset in offsets:
            delay = started + float(offset) - perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            index, conv = next(stream)
            released = perf_counter()
            arrivals.append(released)
            tasks.append(asyncio.create_task(self._conversation(index, conv, released)))
        await asyncio.gather(*tasks)
        return arrivals

    async def _closed_loop(self, stream: Iterator[tuple[int, Conversation]], started: float) -> list[float]:
        """rate=inf with a duration: --max-concurrency workers, each one conversation at a time."""
        arrivals: list[float] = []

        async def worker() -> None:
            while self._deadline is not None and perf_counter() < self._deadline:
                index, conv = next(stream)
                released = perf_counter()
                arrivals.append(released)
                await self._conversation(index, conv, released)

        await asyncio.gather(*(worker() for _ in range(self._load.max_concurrency or 1)))
        return arrivals

    async def _conversation(self, index: int, conv: Conversation, released: float) -> None:
        history: list[str] = []
        scheduled = released
        for r, turn in enumerate(conv.turns):
            if r and self._deadline is not None and perf_counter() >= self._deadline:
                return
            ex = Exchange(index, r, scheduled, turn.output_len, turn.prompt_len)
            if turn.prompt_len is None:
                ex.prompt_text = prompt_text(conv, history, turn)
            await self._send(request_body(self._target, conv, history, turn), ex)
            if r + 1 == len(conv.turns):
                return
            result = parse_exchange(ex)
            if not result.success:
                return  # the history is broken: a failed round ends this user's conversation
            history += [turn.text, result.text]
            if conv.think_time_s:
                await asyncio.sleep(conv.think_time_s)
            scheduled = perf_counter()

    async def _send(self, body: bytes, ex: Exchange) -> None:
        state = self.state
        if self._slots is None:
            state.sent += 1
            await self._client.send(body, ex)
        else:
            async with self._slots:
                state.sent += 1
                await self._client.send(body, ex)
        self._exchanges.append(ex)
        state.done += 1
        if ex.error is not None or ex.status != 200:
            state.failed += 1
        state.recent.append(ex.end_s)


def _cycle(conversations: Sequence[Conversation]) -> Iterator[tuple[int, Conversation]]:
    for i in count():
        yield i, conversations[i % len(conversations)]
