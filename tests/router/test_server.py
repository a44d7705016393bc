"""serve(): a real router process; SIGTERM drains in-flight streams and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from tests.fakes.engine import Behaviour, FakeEngine
from tests.router.support import make_stack, serving

from corral.config import StackConfig, dump_stack

pytestmark = pytest.mark.slow

_SERVE = (
    "import sys; from corral.config import load_stack; from corral.router import serve; "
    "serve(load_stack(sys.argv[1]), port=int(sys.argv[2]))"
)
_STREAM = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def router_process(
    stack: StackConfig, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    path = tmp_path / "stack.yaml"
    path.write_text(dump_stack(stack))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVE, str(path), str(port)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, process)
        yield process, url
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _wait_ready(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert process.returncode is None, "router exited early"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/ready") as reply:
                    if reply.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("router never became ready")


async def test_sigterm_lets_an_in_flight_stream_finish_then_exits_zero(tmp_path: Path) -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(itl_s=0.04, tokens=20))
    async with serving(engine, FakeEngine("e1")) as (chat, embed):
        stack = make_stack([chat], [embed], drain_timeout_s=10)
        async with (
            router_process(stack, tmp_path) as (process, url),
            aiohttp.ClientSession() as http,
        ):
            reply = await http.post(url + "/v1/chat/completions", json=_STREAM)
            first = await reply.content.readany()
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
                async with aiohttp.ClientSession() as fresh, fresh.get(url + "/health"):
                    pass
            rest = await reply.read()
            assert first + rest == bytes(engine.records[0].sent)
            assert engine.records[0].outcome == "completed"
            assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_drain_timeout_cuts_long_streams_and_cancels_them_upstream(tmp_path: Path) -> None:
    engine = FakeEngine("w1", behaviour=Behaviour(itl_s=0.05, tokens=400))
    async with serving(engine, FakeEngine("e1")) as (chat, embed):
        stack = make_stack([chat], [embed], drain_timeout_s=0.3)
        async with (
            router_process(stack, tmp_path) as (process, url),
            aiohttp.ClientSession() as http,
        ):
            reply = await http.post(url + "/v1/chat/completions", json=_STREAM)
            await reply.content.readany()
            process.send_signal(signal.SIGTERM)
            rest = await reply.read()  # ends cleanly, with an error frame saying why
            assert orjson.loads(rest.rsplit(b"data: ", 1)[1])["error"]["code"] == "overloaded"
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert await engine.records[0].wait(2.0) == "cancelled"
