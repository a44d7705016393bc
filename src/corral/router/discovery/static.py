"""Static discovery: the endpoints listed in the stack file (the supervisor fills them in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from corral.config import ModelConfig


class StaticDiscovery:
    """:class:`~corral.router.discovery.base.Discovery` from ``ModelConfig.endpoints``."""

    def __init__(self, models: Sequence[ModelConfig]) -> None:
        self._endpoints = MappingProxyType({model.name: model.endpoints for model in models})

    async def endpoints(self) -> Mapping[str, tuple[str, ...]]:
        return self._endpoints

    async def aclose(self) -> None:
        return None
