"""The stack's Redis in the cluster, when the stack needs one (``stack.needs_redis``: the
shared KV tier, rate limits shared by the routers) and names none (``redis.url``).

One Redis pod (a Deployment, recreated rather than rolled: two would split the data) and
its Service. It holds a cache and counters, nothing that must survive a restart, so it
keeps nothing on disk; ``maxmemory`` is ``redis.max_memory_bytes``, and past it Redis
evicts the least recently used keys (``allkeys-lru``, as the description of that field
says: LMCache's chunks carry no expiry, so ``volatile-lru`` would let them fill it). For a
Redis that must survive a node, give
``redis.url`` of a managed or replicated one (ElastiCache, a Redis operator).
"""

from __future__ import annotations

from corral.config import StackConfig
from corral.deploy.names import NAME, REDIS, common_labels
from corral.deploy.objects import Component, Object, metadata, obj

PORT = 6379


def redis_url(stack: StackConfig) -> str | None:
    """The URL every component uses: ``redis.url``, the in-cluster Service, or None (no Redis)."""
    if not stack.needs_redis:
        return None
    if stack.redis.url is not None:
        return stack.redis.url
    return f"redis://{REDIS}.{stack.deploy.namespace}.svc:{PORT}/0"


def deploys_redis(stack: StackConfig) -> bool:
    return stack.needs_redis and stack.redis.url is None


def _labels() -> dict[str, str]:
    return {**common_labels("redis"), NAME: REDIS}


def _container(stack: StackConfig) -> Object:
    max_bytes = stack.redis.max_memory_bytes
    memory_mib = -(-max_bytes * 5 // 4 // 1024**2)  # maxmemory + 25 % for buffers and fragmentation
    command = ["redis-server", "--port", str(PORT), "--maxmemory", str(max_bytes),
               "--maxmemory-policy", "allkeys-lru", "--save", "", "--appendonly", "no",
               "--protected-mode", "no"]  # fmt: skip
    probe = {"tcpSocket": {"port": "redis"}, "periodSeconds": 5, "failureThreshold": 3}
    return {
        "name": "redis",
        "image": stack.deploy.redis_image,
        "command": command,
        "ports": [{"name": "redis", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "500m", "memory": f"{memory_mib}Mi"},
                      "limits": {"memory": f"{memory_mib}Mi"}},
        "readinessProbe": probe,
        "livenessProbe": {**probe, "periodSeconds": 10},
        "securityContext": {"allowPrivilegeEscalation": False},
    }  # fmt: skip


def redis_component(stack: StackConfig) -> Component:
    """``manifests/20-redis.yaml``: Deployment and Service."""
    ns = stack.deploy.namespace
    selector = {NAME: REDIS}
    deployment = obj("apps/v1", "Deployment", metadata(REDIS, ns, _labels()), spec={
        "replicas": 1,
        "selector": {"matchLabels": selector},
        "strategy": {"type": "Recreate"},
        "template": {"metadata": {"labels": _labels()}, "spec": {"containers": [_container(stack)]}},
    })  # fmt: skip
    port = {"name": "redis", "port": PORT, "targetPort": "redis", "protocol": "TCP"}
    service = obj("v1", "Service", metadata(REDIS, ns, _labels()), spec={
        "type": "ClusterIP", "selector": selector, "ports": [port],
    })  # fmt: skip
    return Component("manifests/20-redis.yaml", (deployment, service))
