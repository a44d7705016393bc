"""Discovery: where each model's workers are. The pool asks before every health round."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Discovery(Protocol):
    """Answers ``model name -> base URLs of its workers``.

    Implementations may watch something (a Kubernetes API, the supervisor) in their own
    background task; :meth:`endpoints` must then return their latest view quickly.
    """

    async def endpoints(self) -> Mapping[str, tuple[str, ...]]: ...

    async def aclose(self) -> None: ...
