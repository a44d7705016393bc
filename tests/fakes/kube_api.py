"""A fake Kubernetes API server for pods: a real aiohttp server on 127.0.0.1 that speaks
the list + watch protocol the way kube-apiserver does, for discovery tests.

    async with FakeKubeAPI(token="t") as api:           # api.url = http://127.0.0.1:PORT
        api.add_pod(make_pod("w-0", model="m", port=8001))
        api.set_ready("w-0", False)                     # MODIFIED
        api.terminate("w-0")                            # MODIFIED, deletionTimestamp set
        api.delete_pod("w-0")                           # DELETED
        api.end_watches()    # open watches end cleanly (as at their timeoutSeconds)
        api.drop_watches()   # open watch connections are cut (no clean end)
        api.expire_history() # watches from any version before now get 410 Gone
        api.bookmark()       # BOOKMARK at the current version to watches that allow them
        api.requests         # every list / watch request, with its query

Served: ``GET /api/v1/namespaces/{ns}/pods`` with ``labelSelector`` (equality, ``!=``,
existence, ``!key``; set-based terms are refused with 400), ``limit`` / ``continue``, and
``watch=true`` with ``resourceVersion``, ``allowWatchBookmarks`` and ``timeoutSeconds``.
A watch replays the changes after its resourceVersion from a bounded history, then
streams live ones as newline-delimited JSON; a version older than the history answers
410 Gone, as an ERROR event with a Status (what kube-apiserver does) or, with
``gone_as="status"``, as the HTTP status. A change that moves a pod into or out of a
watch's selector arrives as ADDED or DELETED, as from the real server. Without
``resourceVersion`` (or with "0") a watch starts with an ADDED event per pod.
Every request needs ``Authorization: Bearer <token>`` when ``token`` is set (401 Status).
Pages of a continued list show the current pods, not a snapshot (a simplification).

TLS: ``FakeKubeAPI(ssl=ca.server_context())`` serves https (``api.url`` says so), with a
certificate from :func:`make_ca`, a throwaway CA made with the ``openssl`` command;
``server_context(client_certs=True)`` also requires a client certificate from that CA
(mutual TLS), and each request records the common name of the certificate it came with.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import socket
import ssl
import subprocess
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

from corral.deploy.names import label_value

Pod = dict[str, Any]
_END, _DROP = b"end", b"drop"


def make_pod(
    name: str,
    *,
    model: str,
    ip: str | None = "127.0.0.1",
    port: int | None = 8000,
    role: str | None = None,
    ready: bool = True,
    namespace: str = "corral",
    labels: Mapping[str, str] | None = None,
) -> Pod:
    """A pod as corral's manifests describe a worker (``port`` None: no port named http)."""
    pod_labels = {
        "app.kubernetes.io/name": "corral-worker",
        "corral.dev/model": label_value(model),
        **({"corral.dev/role": role} if role else {}),
        **(labels or {}),
    }
    ports = [{"name": "http", "containerPort": port, "protocol": "TCP"}] if port else []
    pod: Pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": pod_labels,
            "annotations": {"corral.dev/model-name": model},
        },
        "spec": {"containers": [{"name": "worker", "image": "corral", "ports": ports}]},
        "status": {"phase": "Running" if ready else "Pending"},
    }
    if ip:
        pod["status"]["podIP"] = ip
    _set_ready(pod, ready)
    return pod


def _set_ready(pod: Pod, ready: bool) -> None:
    value = "True" if ready else "False"
    pod["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "True"},
        {"type": "ContainersReady", "status": value},
        {"type": "Ready", "status": value},
    ]


@dataclass(frozen=True)
class KubeRequest:
    """One request the fake answered: ``list`` or ``watch``, its query, and the common name
    of the client certificate it came with (None: none, or plain HTTP)."""

    verb: Literal["list", "watch"]
    namespace: str
    query: Mapping[str, str]
    client_cn: str | None = None


@dataclass(frozen=True)
class _Change:
    version: int
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    old: Pod | None
    new: Pod


@dataclass(eq=False)
class _Watcher:
    namespace: str
    selector: Callable[[Mapping[str, str]], bool]
    bookmarks: bool
    request: web.Request
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)


class SelectorError(ValueError):
    pass


def parse_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A label selector of equality and existence terms, as a predicate on labels."""
    terms: list[tuple[str, str, str]] = []  # (op, key, value)
    for raw in filter(None, (term.strip() for term in text.split(","))):
        if "(" in raw or " in " in raw or " notin " in raw:
            raise SelectorError(f"set-based selector term {raw!r} is not supported by the fake")
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in raw:
            key, value = raw.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif raw.startswith("!"):
            terms.append(("!", raw[1:].strip(), ""))
        else:
            terms.append(("exists", raw, ""))

    def matches(labels: Mapping[str, str]) -> bool:
        return all(_term_holds(labels, op, key, value) for op, key, value in terms)

    return matches


def _term_holds(labels: Mapping[str, str], op: str, key: str, value: str) -> bool:
    if op == "!=":
        return labels.get(key) != value
    if op == "=":
        return labels.get(key) == value
    if op == "!":
        return key not in labels
    return key in labels


def _client_cn(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeKubeAPI:
    """The fake server and its state (pods by namespace and name, one version counter)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        history: int = 1000,
        gone_as: Literal["event", "status"] = "event",
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.token = token
        self.ssl = ssl
        self.gone_as = gone_as
        self.requests: list[KubeRequest] = []
        self._pods: dict[tuple[str, str], Pod] = {}
        self._version = 1
        self._history: deque[_Change] = deque(maxlen=history)
        self._compacted = 0  # a watch from an older version than this gets 410
        self._watchers: set[_Watcher] = set()
        self._uids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.port = 0

    async def __aenter__(self) -> FakeKubeAPI:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock, ssl_context=self.ssl).start()
        self.port = sock.getsockname()[1]
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the test's side -------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._version)

    @property
    def watching(self) -> int:
        """Watches open now."""
        return len(self._watchers)

    def verbs(self) -> list[str]:
        return [request.verb for request in self.requests]

    def add_pod(self, pod: Pod) -> None:
        pod = copy.deepcopy(pod)
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        if key in self._pods:
            raise ValueError(f"pod {key} exists")
        meta.setdefault("uid", f"00000000-0000-0000-0000-{next(self._uids):012d}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self._commit("ADDED", None, pod)

    def update_pod(self, name: str, change: Callable[[Pod], None], namespace: str = "corral") -> None:
        old = self._pods[(namespace, name)]
        new = copy.deepcopy(old)
        change(new)
        self._commit("MODIFIED", old, new)

    def set_ready(self, name: str, ready: bool, namespace: str = "corral") -> None:
        self.update_pod(name, lambda pod: _set_ready(pod, ready), namespace)

    def terminate(self, name: str, namespace: str = "corral") -> None:
        """What `kubectl delete pod` does first: the pod stays (and stays Ready) for its grace period."""

        def mark(pod: Pod) -> None:
            pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
            pod["metadata"]["deletionGracePeriodSeconds"] = 30

        self.update_pod(name, mark, namespace)

    def delete_pod(self, name: str, namespace: str = "corral") -> None:
        old = self._pods[(namespace, name)]
        self._commit("DELETED", old, copy.deepcopy(old))

    def expire_history(self) -> None:
        """Forget every change so far: a watch from any earlier version gets 410 Gone."""
        self._history.clear()
        self._compacted = self._version

    def end_watches(self) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(_END)
        self._watchers.clear()

    def drop_watches(self) -> None:
        """Cut every open watch connection now; later changes reach no one until a rewatch."""
        for watcher in self._watchers:
            if watcher.request.transport is not None:
                watcher.request.transport.abort()
            watcher.queue.put_nowait(_DROP)
        self._watchers.clear()

    def bookmark(self) -> None:
        event = {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                 "metadata": {"resourceVersion": self.resource_version}}}
        for watcher in self._watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(orjson.dumps(event) + b"\n")

    # -- state -----------------------------------------------------------------------

    def _commit(self, kind: Literal["ADDED", "MODIFIED", "DELETED"], old: Pod | None, new: Pod) -> None:
        self._version += 1
        new["metadata"]["resourceVersion"] = str(self._version)
        key = (new["metadata"]["namespace"], new["metadata"]["name"])
        if kind == "DELETED":
            del self._pods[key]
        else:
            self._pods[key] = new
        change = _Change(self._version, kind, old, new)
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].version
        self._history.append(change)
        for watcher in self._watchers:
            line = self._event_for(watcher, change)
            if line is not None:
                watcher.queue.put_nowait(line)

    @staticmethod
    def _event_for(watcher: _Watcher, change: _Change) -> bytes | None:
        def seen(pod: Pod | None) -> bool:
            return (pod is not None and pod["metadata"]["namespace"] == watcher.namespace
                    and watcher.selector(pod["metadata"].get("labels") or {}))

        before, after = seen(change.old), change.type != "DELETED" and seen(change.new)
        kind = {(False, True): "ADDED", (True, True): "MODIFIED", (True, False): "DELETED"}.get((before, after))
        if kind is None:
            return None
        return orjson.dumps({"type": kind, "object": change.new}) + b"\n"

    # -- HTTP ------------------------------------------------------------------------

    async def _pods_handler(self, request: web.Request) -> web.StreamResponse:
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        namespace = request.match_info["namespace"]
        query = dict(request.query)
        watch = query.get("watch") in ("true", "1")
        self.requests.append(KubeRequest("watch" if watch else "list", namespace, query, _client_cn(request)))
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except SelectorError as exc:
            return web.json_response(_status(400, "BadRequest", str(exc)), status=400)
        if watch:
            return await self._watch(request, namespace, selector, query)
        return self._list(namespace, selector, query)

    def _list(self, namespace: str, selector: Callable[[Mapping[str, str]], bool],
              query: Mapping[str, str]) -> web.Response:
        pods = sorted(
            (pod for (ns, _), pod in self._pods.items()
             if ns == namespace and selector(pod["metadata"].get("labels") or {})),
            key=lambda pod: pod["metadata"]["name"],
        )
        start = int(base64.urlsafe_b64decode(query["continue"])) if query.get("continue") else 0
        limit = int(query.get("limit") or 0) or len(pods) or 1
        page = pods[start : start + limit]
        metadata: dict[str, Any] = {"resourceVersion": self.resource_version}
        if start + limit < len(pods):
            metadata["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": page}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _watch(self, request: web.Request, namespace: str,
                     selector: Callable[[Mapping[str, str]], bool], query: Mapping[str, str]) -> web.StreamResponse:
        since = query.get("resourceVersion") or "0"
        watcher = _Watcher(namespace, selector, query.get("allowWatchBookmarks") == "true", request)
        gone = since != "0" and int(since) < self._compacted
        if gone and self.gone_as == "status":
            message = f"too old resource version: {since} ({self._compacted})"
            return web.json_response(_status(410, "Expired", message), status=410)
        if gone:
            message = f"too old resource version: {since} ({self._compacted})"
            event = {"type": "ERROR", "object": _status(410, "Expired", message)}
            watcher.queue.put_nowait(orjson.dumps(event) + b"\n")
            watcher.queue.put_nowait(_END)
        else:
            for line in self._replay(watcher, since):
                watcher.queue.put_nowait(line)
            self._watchers.add(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        timeout_s = float(query.get("timeoutSeconds") or 1800)
        line = _END
        try:
            async with asyncio.timeout(timeout_s):
                while (line := await watcher.queue.get()) not in (_END, _DROP):
                    await response.write(line)
        except TimeoutError:
            pass  # the watch's time is up: end it cleanly, as the real server does
        except ConnectionResetError:
            return response  # the client went away
        finally:
            self._watchers.discard(watcher)
        if line != _DROP:  # a dropped connection gets no clean end
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
        return response

    def _replay(self, watcher: _Watcher, since: str) -> list[bytes]:
        if since == "0":
            return [orjson.dumps({"type": "ADDED", "object": pod}) + b"\n"
                    for pod in self._pods.values()
                    if self._event_for(watcher, _Change(0, "ADDED", None, pod)) is not None]
        return [line for change in self._history if change.version > int(since)
                if (line := self._event_for(watcher, change)) is not None]


# -- a throwaway CA for TLS ---------------------------------------------------------------

#: Extensions as kube-apiserver's certificates carry them (kubeadm's CA and serving cert).
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class ThrowawayCA:
    """PEM files of a test CA, a server certificate for 127.0.0.1 and a client certificate
    (``CN=CLIENT_CN``, as Kubernetes names a certificate's user), all signed by the CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    CLIENT_CN = "corral-router"

    def server_context(self, *, client_certs: bool = False) -> ssl.SSLContext:
        """The server side of TLS for :class:`FakeKubeAPI`; ``client_certs``: refuse a
        client without a certificate from this CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if client_certs:
            context.load_verify_locations(cafile=str(self.ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def make_ca(folder: Path) -> ThrowawayCA:
    """Make a :class:`ThrowawayCA` in ``folder`` with the ``openssl`` command (P-256 keys,
    valid two days). Raises FileNotFoundError without the command, CalledProcessError
    when it fails."""
    config = folder / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", "-config", str(config), "-extensions", "ca", *new_key,
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=corral test CA")
    for serial, (name, subject) in enumerate((("server", "127.0.0.1"), ("client", ThrowawayCA.CLIENT_CN)), 2):
        openssl("req", "-new", "-config", str(config), *new_key,
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={subject}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-set_serial", str(serial), "-days", "2", "-extfile", str(config), "-extensions", name,
                "-out", f"{name}.crt")
    return ThrowawayCA(folder / "ca.crt", folder / "server.crt", folder / "server.key",
                       folder / "client.crt", folder / "client.key")
