"""Static discovery: the endpoints listed in the stack file (the supervisor fills them in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from corral.config import ModelConfig
from corral.router.discovery.base import prefill_pool


class StaticDiscovery:
    """:class:`~corral.router.discovery.base.Discovery` from ``ModelConfig.endpoints``."""

    def __init__(self, models: Sequence[ModelConfig]) -> None:
        pools = {model.name: model.endpoints for model in models}
        pools.update({prefill_pool(m.name): m.prefill_endpoints for m in models if m.prefill_endpoints})
        self._endpoints = MappingProxyType(pools)

    async def endpoints(self) -> Mapping[str, tuple[str, ...]]:
        return self._endpoints

    async def aclose(self) -> None:
        return None
