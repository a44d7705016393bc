"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` frames and ``data: [DONE]``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from corral.errors import APIError

DONE = b"data: [DONE]\n\n"


def encode(payload: dict[str, Any]) -> bytes:
    """One SSE data frame."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_frame(error: APIError) -> bytes:
    """The frame sent when a stream fails after it started (status 200 already sent)."""
    return encode(error.to_dict())


class FrameSplitter:
    """Incremental SSE parser: feed arbitrary byte chunks, get complete ``data`` payloads.

    Only ``data:`` lines matter for OpenAI streams; comments and other fields are skipped.
    Multi-line data fields are joined with newlines, as the SSE spec says.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buffer += chunk
        while True:
            end, sep_len = _find_event_end(self._buffer)
            if end < 0:
                return
            event, self._buffer = self._buffer[:end], self._buffer[end + sep_len :]
            data = [
                line[5:].removeprefix(b" ")
                for line in event.replace(b"\r\n", b"\n").split(b"\n")
                if line.startswith(b"data:")
            ]
            if data:
                yield b"\n".join(data)


def _find_event_end(buffer: bytes) -> tuple[int, int]:
    candidates = [(buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n")]
    found = [c for c in candidates if c[0] >= 0]
    return min(found) if found else (-1, 0)


async def iter_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data`` payloads of an SSE byte stream, in order."""
    splitter = FrameSplitter()
    async for chunk in chunks:
        for data in splitter.feed(chunk):
            yield data
