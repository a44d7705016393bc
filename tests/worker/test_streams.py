import asyncio
import threading

import orjson
import pytest

from corral.errors import APIError
from corral.worker.chunks import Head
from corral.worker.completions import _frames
from corral.worker.streams import TokenStream, Usage


async def test_pieces_from_another_thread_arrive_in_order_with_usage() -> None:
    stream = TokenStream(5)

    def produce() -> None:
        for piece in ("a", "b", "c"):
            stream.push(piece)
        stream.finish("length", 3, cached_tokens=2)

    threading.Thread(target=produce).start()
    text = "".join([piece async for piece in stream])
    assert text == "abc"
    assert stream.finish_reason == "length"
    assert stream.usage == Usage(5, 3, 2)
    assert stream.usage.total_tokens == 8


async def test_pieces_waiting_together_are_joined() -> None:
    stream = TokenStream(1)
    for piece in ("x", "y", "z"):
        stream.push(piece)
    stream.finish("stop", 3)
    await asyncio.sleep(0)  # let the loop deliver them all
    assert [piece async for piece in stream] == ["xyz"]


async def test_failure_is_raised_to_the_consumer() -> None:
    stream = TokenStream(1)
    stream.push("a")
    stream.fail(APIError("boom"))
    got = []
    with pytest.raises(APIError, match="boom"):
        async for piece in stream:
            got.append(piece)
    assert got == ["a"]


async def test_cancel_ends_iteration_at_once_and_flags_the_producer() -> None:
    stream = TokenStream(1)
    called = []
    stream.on_cancel(lambda: called.append(True))

    async def consume() -> list[str]:
        return [piece async for piece in stream]

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    stream.cancel()
    assert await asyncio.wait_for(consumer, 1) == []
    assert stream.cancelled and called == [True]
    assert stream.finish_reason is None
    stream.push("late")  # a producer that had not noticed yet: ignored
    stream.finish("stop", 1)
    assert [piece async for piece in stream] == []


async def test_cancel_after_the_end_does_nothing() -> None:
    stream = TokenStream(1)
    called = []
    stream.on_cancel(lambda: called.append(True))
    stream.finish("stop", 0)
    assert [piece async for piece in stream] == []
    stream.cancel()
    assert not stream.cancelled and not called


async def test_the_role_chunk_waits_for_the_first_token() -> None:
    """TTFT as clients measure it (first chunk with choices) must include the prefill."""
    stream = TokenStream(3)
    frames = _frames(stream, Head.new("m", "chat"), include_usage=False)
    first = asyncio.ensure_future(anext(frames))
    await asyncio.sleep(0.05)
    assert not first.done()  # nothing is sent while the prompt is still being processed
    stream.push("Hi")
    role = orjson.loads((await first)[len(b"data: "):])
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = orjson.loads((await anext(frames))[len(b"data: "):])
    assert content["choices"][0]["delta"] == {"content": "Hi"}
    stream.finish("stop", 1)
    rest = [frame async for frame in frames]
    assert rest[-1] == b"data: [DONE]\n\n"
