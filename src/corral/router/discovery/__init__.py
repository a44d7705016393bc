"""Where workers are: the :class:`Discovery` interface and its implementations."""

from corral.router.discovery.base import Discovery
from corral.router.discovery.static import StaticDiscovery

__all__ = ["Discovery", "StaticDiscovery"]
