"""Where the Kubernetes API is and how to authenticate to it, for Kubernetes discovery.

Three sources, first match wins (:func:`api_access`):

* ``api_url``: that URL, with ``token_file`` and ``ca_file`` if given (``kubectl proxy``,
  a test server);
* ``kubeconfig``: the cluster, user and namespace of its current (or the named) context;
  token, tokenFile and client certificates are supported, exec plugins are not;
* in-cluster: the service account's token, CA and namespace from ``service_account_dir``;
  the API at ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``, the variables
  the kubelet sets in every container (client-go's in-cluster config reads the same), else
  at ``https://kubernetes.default.svc``.

The token is read from its file on every request, so rotated service account tokens are
picked up. Only construction reads other files; it raises :class:`ConfigError` naming
the setting when something is missing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from corral.config import KubernetesDiscoveryConfig
from corral.errors import ConfigError

#: The API server's name inside every cluster (Kubernetes docs, "Accessing the API from a Pod").
IN_CLUSTER_URL = "https://kubernetes.default.svc"
_FIELD = "router.discovery"


@dataclass(frozen=True)
class ApiAccess:
    """How to reach the API: base URL, bearer token (inline or a file), TLS, namespace."""

    url: str
    namespace: str
    ssl: ssl.SSLContext | None = None
    token: str | None = None
    token_file: str | None = None

    async def headers(self) -> dict[str, str]:
        """Request headers, with ``Authorization`` when there is a token (file read now)."""
        token = self.token
        if self.token_file is not None:
            token = (await asyncio.to_thread(Path(self.token_file).read_text, "utf-8")).strip()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers


def api_access(config: KubernetesDiscoveryConfig, environ: Mapping[str, str] | None = None) -> ApiAccess:
    """Resolve ``config`` into an :class:`ApiAccess` (see the module docstring); in-cluster,
    ``environ`` (default ``os.environ``) may name the API service's host and port."""
    if config.api_url is not None:
        namespace = config.namespace or _service_account_namespace(config)
        context = _ssl_context(config.ca_file, None) if config.ca_file else None
        return ApiAccess(config.api_url, namespace, context, token_file=config.token_file)
    if config.kubeconfig is not None:
        return _from_kubeconfig(config)
    token = Path(config.service_account_dir) / "token"
    if not token.is_file():
        raise ConfigError(
            f"{_FIELD}: not running in a cluster ({token} is missing); set api_url or kubeconfig"
        )
    ca = Path(config.service_account_dir) / "ca.crt"
    namespace = config.namespace or _service_account_namespace(config)
    url = _in_cluster_url(os.environ if environ is None else environ)
    return ApiAccess(url, namespace, _ssl_context(str(ca), None), token_file=str(token))


def _in_cluster_url(environ: Mapping[str, str]) -> str:
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port:
        return IN_CLUSTER_URL
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{_FIELD}: KUBERNETES_SERVICE_PORT '{port}' is not a port number")
    with contextlib.suppress(ValueError):
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            host = f"[{host}]"
    return f"https://{host}:{port}"


def _service_account_namespace(config: KubernetesDiscoveryConfig) -> str:
    path = Path(config.service_account_dir) / "namespace"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise ConfigError(f"{_FIELD}.namespace: not set, and {path} cannot be read") from None


def _ssl_context(ca_file: str | None, ca_data: bytes | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(
            cafile=ca_file, cadata=ca_data.decode("ascii") if ca_data else None
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{_FIELD}: cannot load the CA {ca_file or '(inline data)'}: {exc}") from None


def _from_kubeconfig(config: KubernetesDiscoveryConfig) -> ApiAccess:
    path = Path(config.kubeconfig or "")
    where = f"{_FIELD}.kubeconfig ({path})"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: not a kubeconfig (expected a mapping)")
    context_name = config.context or document.get("current-context")
    if not context_name:
        raise ConfigError(f"{where}: no current-context; set {_FIELD}.context")
    context = _named(document, "contexts", "context", context_name, where)
    cluster = _named(document, "clusters", "cluster", context.get("cluster"), where)
    user = _named(document, "users", "user", context.get("user"), where) if context.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: cluster '{context.get('cluster')}' has no http(s) server")
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"{where}: user '{context.get('user')}' authenticates through an exec plugin or "
            "auth provider, which corral does not run; use a token, a client certificate, or "
            "`kubectl proxy` with api_url"
        )
    base = path.parent
    ssl_context = _kubeconfig_tls(cluster, user, base, where) if server.startswith("https") else None
    token_file = user.get("tokenFile")
    return ApiAccess(
        server.rstrip("/"),
        config.namespace or context.get("namespace") or "default",
        ssl_context,
        token=user.get("token"),
        token_file=str(base / token_file) if token_file else None,
    )


def _named(document: dict[str, Any], section: str, key: str, name: object, where: str) -> dict[str, Any]:
    for entry in document.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(key), dict):
            found: dict[str, Any] = entry[key]
            return found
    raise ConfigError(f"{where}: no {key} named '{name}' in {section}")


def _kubeconfig_tls(cluster: dict[str, Any], user: dict[str, Any], base: Path, where: str) -> ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        context = _ssl_context(None, _pem(cluster["certificate-authority-data"], where))
    elif cluster.get("certificate-authority"):
        context = _ssl_context(str(base / cluster["certificate-authority"]), None)
    else:
        context = ssl.create_default_context()
    cert = _file_or_data(user, "client-certificate", base, where)
    key = _file_or_data(user, "client-key", base, where)
    if cert is not None and key is not None:
        _load_client_certificate(context, cert, key, where)
    return context


def _file_or_data(user: dict[str, Any], name: str, base: Path, where: str) -> bytes | None:
    if user.get(f"{name}-data"):
        return _pem(user[f"{name}-data"], where)
    if user.get(name):
        try:
            return (base / str(user[name])).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {name} {user[name]}: {exc.strerror}") from None
    return None


def _pem(data: object, where: str) -> bytes:
    try:
        return base64.b64decode(str(data), validate=True)
    except ValueError:
        raise ConfigError(f"{where}: a *-data field is not base64") from None


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes, where: str) -> None:
    """``ssl`` loads certificates only from files: write both to a private temporary file."""
    handle, name = tempfile.mkstemp(prefix="corral-kube-", suffix=".pem")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(cert.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(name)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: cannot load the client certificate: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
