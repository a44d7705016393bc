"""The router: corral's OpenAI-compatible gateway in front of the workers.

``create_app(stack)`` builds the ASGI app; ``serve(stack)`` runs it. The seams are
:class:`~corral.router.transport.base.Transport` (how workers are reached),
:class:`~corral.router.discovery.base.Discovery` (where they are) and
:class:`~corral.router.routing.base.Policy` (which one answers a request).
"""

from corral.router.app import RouterApp, create_app
from corral.router.server import serve

__all__ = ["RouterApp", "create_app", "serve"]
