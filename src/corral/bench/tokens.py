"""Counting tokens of prompt text: exactly through the server's ``/tokenize``, or estimated.

corral's worker (like vLLM) answers ``POST /tokenize {"prompt": str}`` with
``{"tokens": [...], "count": n}``; we ask for text tokens only (``add_special_tokens: false``). Servers without it (a hosted API, corral's router when it
does not proxy the route) get :class:`ApproxCounter`: ``round(characters / 4)``, OpenAI's rule
of thumb for English. Random prompts are built from short common words (about one token
each in BPE vocabularies) so the estimate stays close there too; every result states which
counter was used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import aiohttp
import orjson

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4


class TokenCounter(Protocol):
    """Counts the tokens of texts. ``name`` goes into results (``server`` or ``approx``)."""

    name: str

    async def count(self, texts: Sequence[str]) -> list[int]: ...


class ApproxCounter:
    """``round(len(text) / 4)``: a stated approximation, no server needed."""

    name = "approx"

    async def count(self, texts: Sequence[str]) -> list[int]:
        return [approx_tokens(text) for text in texts]


def approx_tokens(text: str) -> int:
    return round(len(text) / CHARS_PER_TOKEN)


class ServerCounter:
    """Exact counts from ``POST {root}/tokenize``; at most ``parallel`` requests at once."""

    name = "server"

    def __init__(
        self, session: aiohttp.ClientSession, url: str, fields: dict[str, object], *, parallel: int = 16
    ) -> None:
        self._session = session
        self._url = url
        self._fields = fields
        self._parallel = asyncio.Semaphore(parallel)

    async def count(self, texts: Sequence[str]) -> list[int]:
        return list(await asyncio.gather(*(self._count_one(text) for text in texts)))

    async def _count_one(self, text: str) -> int:
        async with self._parallel:
            count = await tokenize(self._session, self._url, text, self._fields)
        if count is None:
            raise RuntimeError(f"{self._url} stopped answering /tokenize")
        return count


async def tokenize(
    session: aiohttp.ClientSession, url: str, text: str, fields: dict[str, object]
) -> int | None:
    """The token count of ``text``, or None when the server has no usable /tokenize."""
    payload = {"prompt": text, **fields}
    try:
        async with session.post(
            url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}
        ) as response:
            if response.status != 200:
                return None
            body = orjson.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("count"), int):
        return int(body["count"])
    tokens = body.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


async def detect_counter(
    session: aiohttp.ClientSession, root_url: str, model: str, mode: str
) -> TokenCounter:
    """``mode``: ``server`` (must work), ``approx``, or ``auto`` (server when it answers)."""
    if mode == "approx":
        return ApproxCounter()
    url = f"{root_url}/tokenize"
    # Text tokens only, without BOS, as vLLM's random dataset counts them; vLLM wants the
    # model name. A strict server may refuse a field: fall back to fewer.
    shapes: list[dict[str, object]] = [
        {"model": model, "add_special_tokens": False},
        {"model": model},
        {},
    ]
    for fields in shapes:
        if await tokenize(session, url, "hello world", fields) is not None:
            return ServerCounter(session, url, fields)
    if mode == "server":
        raise ValueError(f"{url} does not answer POST /tokenize")
    logger.info("%s has no /tokenize: prompt lengths are estimated (chars / 4)", root_url)
    return ApproxCounter()
