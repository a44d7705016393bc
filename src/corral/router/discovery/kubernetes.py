"""Kubernetes discovery: the router's workers are the Ready pods of a label selector.

Which pods (the contract with the manifests ``corral deploy`` renders):

* labels ``app.kubernetes.io/name=corral-worker`` and ``corral.dev/model`` (any value: a
  label-safe form of the model name), plus ``router.discovery.selector`` (the names are
  :mod:`corral.deploy.names`, shared with the renderer);
* annotation ``corral.dev/model-name``: the model's name (or an alias) in the stack file
  (without it, the ``corral.dev/model`` label is matched to the models' label values);
* label ``corral.dev/role``: ``both`` (absent) or ``decode`` serve the model's own pool,
  ``prefill`` its :func:`~corral.router.discovery.base.prefill_pool`;
* endpoint ``http://<podIP>:<port>``, the port of the container port named ``http`` (or
  ``router.discovery.port``).

A pod gets traffic only while its ``Ready`` condition is True and it is not terminating:
a pod with ``metadata.deletionTimestamp`` is dropped on that very event, before its
readiness probe notices (production-stack #420 kept routing to deleted pods).

The protocol is Kubernetes' list + watch, as client-go's reflector runs it: LIST the pods
(paginated) to get the state and its ``resourceVersion``; WATCH from it
(``allowWatchBookmarks``; ADDED / MODIFIED / DELETED move pods, BOOKMARK only advances
the version); when a watch ends or breaks, WATCH again from the last version seen, with
no relist; on 410 Gone (the HTTP status, or an ERROR event whose Status has code 410) the
version is too old for the server's history: LIST again. While the API is unreachable
the last known endpoints stay (the pool's health checks judge them), and retries back
off from ``retry_s`` to ``retry_max_s``. Every change of the endpoints calls
``on_change`` at once, so the pool need not wait for its next health round.

Client: direct HTTP with aiohttp (the router's own HTTP client), not kr8s. kr8s 0.20's
watch restarts at the same too-old resourceVersion after a 410 ERROR event (it never
relists, so it loops), raises on 410 as an HTTP status, does not ask for bookmarks, and
needs the API's resource discovery endpoints first; the protocol itself is two GETs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import aiohttp
import orjson

from corral.config import KubernetesDiscoveryConfig, ModelConfig
from corral.deploy.names import MODEL_LABEL, ROLE_LABEL, WORKER, label_value
from corral.deploy.names import MODEL_NAME_ANNOTATION as MODEL_ANNOTATION
from corral.deploy.names import NAME as NAME_LABEL
from corral.router.discovery.base import prefill_pool
from corral.router.discovery.kube_access import ApiAccess, api_access
from corral.router.tasks import cancel_all

logger = logging.getLogger(__name__)

#: A watch that ends sooner than this is resumed only once this much time has passed.
_MIN_WATCH_S = 0.2

GENERATING_ROLES = frozenset({"both", "decode"})
PREFILL_ROLE = "prefill"
PORT_NAME = "http"
_MAX_EVENT_BYTES = 16 * 1024 * 1024
_LIST_PAGE = 500


class _ApiFailure(Exception):
    """The API answered an error, or something that is not the protocol; retried."""


class _Gone(_ApiFailure):
    """410: our resourceVersion is older than the server's history; relist."""


class PodEndpoint(NamedTuple):
    pool: str
    url: str


def label_selector(config: KubernetesDiscoveryConfig) -> str:
    """The ``labelSelector`` of the worker pods."""
    terms = [f"{NAME_LABEL}={WORKER}", MODEL_LABEL]
    terms += [f"{key}={value}" for key, value in sorted(config.selector.items())]
    return ",".join(terms)


def model_names(models: Sequence[ModelConfig]) -> dict[str, str]:
    """What a pod may call its model -> the model's name: every served name, and (for pods
    without the annotation) the label value of the model's name."""
    names = {label_value(m.name): m.name for m in models}
    names.update({served: m.name for m in models for served in m.served_names})
    return names


def pod_endpoint(pod: Mapping[str, Any], models: Mapping[str, str], default_port: int) -> PodEndpoint | None:
    """The pool and URL ``pod`` serves, or None while it must get no traffic (not Ready,
    terminating, no IP yet) or when it names no model of ``models`` (served name -> model
    name) or an unknown role."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if metadata.get("deletionTimestamp") or not _ready(status):
        return None
    ip = status.get("podIP")
    if not isinstance(ip, str) or not ip:
        return None
    labels = metadata.get("labels") or {}
    named = (metadata.get("annotations") or {}).get(MODEL_ANNOTATION) or labels.get(MODEL_LABEL)
    model = models.get(named) if isinstance(named, str) else None
    role = labels.get(ROLE_LABEL) or "both"
    if model is None or (role not in GENERATING_ROLES and role != PREFILL_ROLE):
        return None
    pool = prefill_pool(model) if role == PREFILL_ROLE else model
    return PodEndpoint(pool, f"http://{_host(ip)}:{_port(pod, default_port)}")


def _ready(status: Mapping[str, Any]) -> bool:
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )


def _host(ip: str) -> str:
    with contextlib.suppress(ValueError):
        if isinstance(ipaddress.ip_address(ip), ipaddress.IPv6Address):
            return f"[{ip}]"
    return ip


def _port(pod: Mapping[str, Any], default_port: int) -> int:
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == PORT_NAME and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return default_port


class KubernetesDiscovery:
    """:class:`~corral.router.discovery.base.Discovery` from a watch of worker pods.

    The watch starts on the first :meth:`endpoints` call, which waits up to
    ``sync_timeout_s`` for the first list; later calls return the latest view at once.
    ``on_change`` (no arguments, called on the event loop) hears of every change.
    Construction resolves the API access and raises ``ConfigError`` when it cannot.
    """

    def __init__(
        self,
        config: KubernetesDiscoveryConfig,
        models: Sequence[ModelConfig],
        *,
        on_change: Callable[[], None] | None = None,
        access: ApiAccess | None = None,
    ) -> None:
        self._config = config
        self._access = access or api_access(config)
        self._models = model_names(models)
        self.on_change = on_change
        self._selector = label_selector(config)
        self._pods: dict[str, PodEndpoint] = {}
        self._view: Mapping[str, tuple[str, ...]] = MappingProxyType({})
        self._resource_version: str | None = None
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ignored: set[tuple[str, str]] = set()

    @property
    def resource_version(self) -> str | None:
        """The last resourceVersion seen (None before the first list, or when relisting)."""
        return self._resource_version

    async def endpoints(self) -> Mapping[str, tuple[str, ...]]:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="corral-kubernetes-discovery")
            try:
                await asyncio.wait_for(self._synced.wait(), self._config.sync_timeout_s)
            except TimeoutError:
                logger.warning(
                    "no pod list from %s after %.1f s; no endpoints until it comes",
                    self._access.url, self._config.sync_timeout_s,
                )
        return self._view

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_all([task])

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=self._config.watch_timeout_s + 30)
        retry_s = self._config.retry_s
        # The API's CA (in-cluster: the service account's ca.crt) and any client certificate.
        connector = aiohttp.TCPConnector(ssl=self._access.ssl if self._access.ssl is not None else True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                listed = self._resource_version is None
                try:
                    if listed:
                        await self._list(session)
                    started_s = time.monotonic()
                    await self._watch(session)
                    retry_s = self._config.retry_s
                    lasted_s = time.monotonic() - started_s
                    if lasted_s < _MIN_WATCH_S:  # a proxy that ends watches at once: no busy loop
                        await asyncio.sleep(_MIN_WATCH_S - lasted_s)
                    continue  # the watch ended (its timeout): resume from the last version
                except _Gone as exc:
                    self._resource_version = None
                    if not listed:
                        logger.info("pod watch: %s; listing again", exc)
                        continue
                    # gone at the very version the list just gave: back off, then relist
                    logger.warning("pod list at %s is gone at once (%s); retrying in %.2f s",
                                   self._access.url, exc, retry_s)
                except (_ApiFailure, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    logger.warning(
                        "pod %s at %s failed: %s; retrying in %.2f s",
                        "list" if self._resource_version is None else "watch",
                        self._access.url, exc or type(exc).__name__, retry_s,
                    )
                except Exception:
                    logger.exception("pod watch failed unexpectedly; retrying in %.2f s", retry_s)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, self._config.retry_max_s)

    @property
    def _pods_url(self) -> str:
        return f"{self._access.url}/api/v1/namespaces/{self._access.namespace}/pods"

    async def _list(self, session: aiohttp.ClientSession) -> None:
        """LIST (all pages): replace the state, then remember its resourceVersion."""
        pods: dict[str, PodEndpoint] = {}
        params = {"labelSelector": self._selector, "limit": str(_LIST_PAGE)}
        while True:
            async with session.get(self._pods_url, params=params, headers=await self._access.headers()) as response:
                await _raise_for_status(response)
                body = orjson.loads(await response.read())
            if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
                raise _ApiFailure("the pod list is not a PodList")
            for pod in body.get("items") or ():
                self._keep(pods, pod)
            continue_token = body["metadata"].get("continue")
            if not continue_token:
                break
            params["continue"] = continue_token
        self._pods = pods
        self._resource_version = str(body["metadata"].get("resourceVersion") or "") or None
        self._publish()
        self._synced.set()

    async def _watch(self, session: aiohttp.ClientSession) -> None:
        """WATCH from the last resourceVersion until the server ends the stream."""
        params = {
            "labelSelector": self._selector,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._config.watch_timeout_s),
            "resourceVersion": self._resource_version or "",
        }
        async with session.get(self._pods_url, params=params, headers=await self._access.headers()) as response:
            await _raise_for_status(response)
            async for line in _lines(response.content):
                self._apply(orjson.loads(line))

    def _apply(self, event: Any) -> None:
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise _ApiFailure(f"malformed watch event (type {kind!r})")
        if kind == "ERROR":
            message = f"watch error {obj.get('code')} {obj.get('reason', '')}: {obj.get('message', '')}"
            raise (_Gone if obj.get("code") == 410 else _ApiFailure)(message)
        metadata = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            self._keep(self._pods, obj)
        elif kind == "DELETED":
            self._pods.pop(str(metadata.get("name")), None)
        elif kind != "BOOKMARK":
            raise _ApiFailure(f"unknown watch event type {kind!r}")
        if metadata.get("resourceVersion"):
            self._resource_version = str(metadata["resourceVersion"])
        if kind != "BOOKMARK":
            self._publish()

    def _keep(self, pods: dict[str, PodEndpoint], pod: Mapping[str, Any]) -> None:
        metadata = pod.get("metadata") or {}
        name = str(metadata.get("name"))
        endpoint = pod_endpoint(pod, self._models, self._config.port)
        if endpoint is None:
            pods.pop(name, None)
            self._explain(pod)
        else:
            pods[name] = endpoint

    def _explain(self, pod: Mapping[str, Any]) -> None:
        """Warn once per pod and model when a pod names an unknown model or role."""
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        named = (metadata.get("annotations") or {}).get(MODEL_ANNOTATION) or labels.get(MODEL_LABEL)
        role = labels.get(ROLE_LABEL) or "both"
        problem = None
        if named not in self._models:
            problem = f"model '{named}' is not in the stack"
        elif role not in GENERATING_ROLES and role != PREFILL_ROLE:
            problem = f"{ROLE_LABEL} '{role}' is not both, decode or prefill"
        key = (str(metadata.get("name")), str(problem))
        if problem is not None and key not in self._ignored:
            self._ignored.add(key)
            logger.warning("ignoring pod %s: %s", metadata.get("name"), problem)

    def _publish(self) -> None:
        pools: dict[str, list[str]] = {}
        for endpoint in self._pods.values():
            pools.setdefault(endpoint.pool, []).append(endpoint.url)
        view = {pool: tuple(sorted(urls)) for pool, urls in sorted(pools.items())}
        if view == dict(self._view):
            return
        self._view = MappingProxyType(view)
        logger.info("pods now serve %s", {pool: len(urls) for pool, urls in view.items()})
        if self.on_change is not None:
            self.on_change()


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status == 200:
        return
    try:
        status = orjson.loads(await response.read())
        message = status.get("message") if isinstance(status, dict) else None
    except orjson.JSONDecodeError:
        message = None
    text = f"{response.status} {response.reason}: {message or '(no Status body)'}"
    if response.status == 410:
        raise _Gone(text)
    if response.status == 401:
        text += " (the API refused the token)"
    elif response.status == 403:
        text += " (the router's service account needs get, list and watch on pods)"
    raise _ApiFailure(text)


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-delimited JSON, one watch event a line, of any length up to a bound."""
    buffer = b""
    async for chunk in stream.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
        if len(buffer) > _MAX_EVENT_BYTES:
            raise _ApiFailure(f"a watch event over {_MAX_EVENT_BYTES} bytes")
    if buffer.strip():
        yield buffer
