"""Discovery: where each model's workers are. The pool asks before every health round."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

#: A model's prefill-only workers form a pool of their own, named ``<model>#prefill``
#: (``#`` cannot occur in a model name); the model's own name names its generating workers.
PREFILL_POOL_SUFFIX = "#prefill"


def prefill_pool(model: str) -> str:
    """The pool name of ``model``'s prefill workers."""
    return model + PREFILL_POOL_SUFFIX


class Discovery(Protocol):
    """Answers ``pool name -> base URLs of its workers``: a model's name for the workers that
    generate, :func:`prefill_pool` of it for its prefill-only workers (if any).

    Implementations may watch something (a Kubernetes API, the supervisor) in their own
    background task; :meth:`endpoints` must then return their latest view quickly. Such an
    implementation should also take an ``on_change`` callback (no arguments, called on the
    event loop) and call it whenever its view changes: the router wires it to
    :meth:`~corral.router.pool.EndpointPool.wake`, so a change reaches the pool at once
    rather than at the next health round.
    """

    async def endpoints(self) -> Mapping[str, tuple[str, ...]]: ...

    async def aclose(self) -> None: ...
