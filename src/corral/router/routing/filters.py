"""Filters: which candidates may serve a request at all."""

from __future__ import annotations

from collections.abc import Sequence

from corral.router.endpoint import Endpoint
from corral.router.routing.base import RequestContext


class HealthyFilter:
    """Keeps the endpoints whose last health check passed and that were not ejected since."""

    def filter(self, ctx: RequestContext, candidates: Sequence[Endpoint]) -> Sequence[Endpoint]:
        return [endpoint for endpoint in candidates if endpoint.healthy]
