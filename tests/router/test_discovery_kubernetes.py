"""Kubernetes discovery against a fake API server on 127.0.0.1 speaking list + watch.

"Within 1 s" checks poll for up to a second (they show the watch, not the health round,
carries a change); they are not timing benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import aiohttp
import certifi
import pytest
import yaml
from tests.fakes.engine import FakeEngine
from tests.fakes.kube_api import FakeKubeAPI, ThrowawayCA, make_ca, make_pod
from tests.router.support import serving, serving_router

from corral.config import KubernetesDiscoveryConfig, StackConfig, parse_stack
from corral.errors import ConfigError
from corral.router.discovery.base import prefill_pool
from corral.router.discovery.kube_access import IN_CLUSTER_URL, api_access
from corral.router.discovery.kubernetes import KubernetesDiscovery, model_names, pod_endpoint

TOKEN = "s3cret-token"
LLAMA = "meta-llama/Llama-3.1-8B"
EMBED = "embed-model"


def k8s_stack(tmp_path: Path, api_url: str | None, **discovery: Any) -> StackConfig:
    token = tmp_path / "token"
    if not token.exists():
        token.write_text(TOKEN + "\n")
    settings: dict[str, Any] = {
        "kind": "kubernetes", "namespace": "corral", "token_file": str(token),
        "retry_s": 0.05, "retry_max_s": 0.2, "sync_timeout_s": 2.0, **discovery,
    }
    if api_url is not None:
        settings["api_url"] = api_url
    gpu = {"type": "l40s"}
    return parse_stack({
        "router": {"health_interval_s": 60, "discovery": settings},
        "cache": {"redis": {}},
        "models": [
            {"name": LLAMA, "aliases": ["llama"], "task": "chat", "engine": "vllm", "source": LLAMA,
             "replicas": 3, "prefill_replicas": 1, "gpu": gpu},
            {"name": EMBED, "task": "embedding", "engine": "vllm", "source": EMBED, "gpu": gpu},
        ],
    })


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeAPI]:
    async with FakeKubeAPI(token=TOKEN) as server:
        yield server


@contextlib.asynccontextmanager
async def watching(api: FakeKubeAPI, tmp_path: Path, **discovery: Any) -> AsyncIterator[KubernetesDiscovery]:
    stack = k8s_stack(tmp_path, api.url, **discovery)
    assert stack.router.discovery is not None
    watcher = KubernetesDiscovery(stack.router.discovery, stack.models)
    await watcher.endpoints()  # starts the watch; returns after the first list
    try:
        yield watcher
    finally:
        await watcher.aclose()


async def within(condition: Callable[[], bool], timeout_s: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.005)


async def view_within(watcher: KubernetesDiscovery, expected: Mapping[str, tuple[str, ...]],
                      timeout_s: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (seen := dict(await watcher.endpoints())) != expected:
        if loop.time() > deadline:
            raise AssertionError(f"after {timeout_s} s the endpoints are {seen}, not {expected}")
        await asyncio.sleep(0.005)


async def caught_up(watcher: KubernetesDiscovery, api: FakeKubeAPI) -> None:
    await within(lambda: watcher.resource_version == api.resource_version)


def pod(name: str, ip: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("model", LLAMA)
    return make_pod(name, ip=ip, port=kwargs.pop("port", 8000), **kwargs)


# -- list -------------------------------------------------------------------------------


async def test_the_first_list_finds_ready_worker_pods_and_their_pools(api: FakeKubeAPI, tmp_path: Path) -> None:
    api.add_pod(pod("both", "10.0.0.1"))
    api.add_pod(pod("decode", "10.0.0.2", role="decode", port=9000))
    api.add_pod(pod("prefill", "10.0.0.3", role="prefill"))
    api.add_pod(pod("by-alias", "10.0.0.4", model="llama"))
    api.add_pod(pod("embed", "10.0.0.5", model=EMBED, port=None))  # no port named http: 8000
    api.add_pod(pod("starting", "10.0.0.6", ready=False))
    api.add_pod(pod("no-ip-yet", "", ready=False))
    api.add_pod(pod("unknown-model", "10.0.0.7", model="other"))
    api.add_pod(pod("odd-role", "10.0.0.8", role="router"))
    api.add_pod(pod("ray", "10.0.0.9", labels={"app.kubernetes.io/name": "corral-ray-worker"}))
    api.add_pod(pod("elsewhere", "10.0.1.1", namespace="other"))
    api.terminate("both")
    api.add_pod(pod("both-2", "10.0.0.10"))

    async with watching(api, tmp_path) as watcher:
        assert dict(await watcher.endpoints()) == {
            LLAMA: ("http://10.0.0.10:8000", "http://10.0.0.2:9000", "http://10.0.0.4:8000"),
            prefill_pool(LLAMA): ("http://10.0.0.3:8000",),
            EMBED: ("http://10.0.0.5:8000",),
        }
    first = api.requests[0]
    assert first.verb == "list" and first.namespace == "corral"
    assert first.query["labelSelector"] == "app.kubernetes.io/name=corral-worker,corral.dev/model"


async def test_extra_selector_labels_narrow_the_pods(api: FakeKubeAPI, tmp_path: Path) -> None:
    api.add_pod(pod("mine", "10.0.0.1", labels={"app.kubernetes.io/instance": "prod"}))
    api.add_pod(pod("theirs", "10.0.0.2", labels={"app.kubernetes.io/instance": "staging"}))
    async with watching(api, tmp_path, selector={"app.kubernetes.io/instance": "prod"}) as watcher:
        assert dict(await watcher.endpoints()) == {LLAMA: ("http://10.0.0.1:8000",)}


async def test_a_long_list_is_read_page_by_page(api: FakeKubeAPI, tmp_path: Path) -> None:
    for i in range(1201):
        api.add_pod(pod(f"w-{i:04d}", f"10.1.{i // 250}.{i % 250}"))
    async with watching(api, tmp_path) as watcher:
        assert len((await watcher.endpoints())[LLAMA]) == 1201
        await within(lambda: api.watching == 1)
    assert api.verbs()[:4] == ["list", "list", "list", "watch"]
    assert "continue" in api.requests[1].query


# -- watch ------------------------------------------------------------------------------


async def test_a_pod_that_becomes_ready_is_an_endpoint_within_1s(api: FakeKubeAPI, tmp_path: Path) -> None:
    async with watching(api, tmp_path) as watcher:
        assert dict(await watcher.endpoints()) == {}
        api.add_pod(pod("w-0", "10.0.0.1", ready=False))
        await caught_up(watcher, api)
        assert dict(await watcher.endpoints()) == {}
        api.set_ready("w-0", True)
        await view_within(watcher, {LLAMA: ("http://10.0.0.1:8000",)})
        api.add_pod(pod("p-0", "10.0.0.2", role="prefill"))
        await view_within(watcher, {LLAMA: ("http://10.0.0.1:8000",), prefill_pool(LLAMA): ("http://10.0.0.2:8000",)})


async def test_unready_terminating_and_deleted_pods_leave_within_1s(api: FakeKubeAPI, tmp_path: Path) -> None:
    for name, ip in (("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3"), ("d", "10.0.0.4")):
        api.add_pod(pod(name, ip))
    changes: list[int] = []
    async with watching(api, tmp_path) as watcher:
        watcher.on_change = lambda: changes.append(1)
        api.set_ready("a", False)
        await view_within(watcher, {LLAMA: ("http://10.0.0.2:8000", "http://10.0.0.3:8000", "http://10.0.0.4:8000")})
        api.terminate("b")  # still Ready: its readiness probe has not failed yet
        await view_within(watcher, {LLAMA: ("http://10.0.0.3:8000", "http://10.0.0.4:8000")})
        api.delete_pod("c")
        await view_within(watcher, {LLAMA: ("http://10.0.0.4:8000",)})
        api.update_pod("d", lambda p: p["metadata"]["labels"].pop("corral.dev/model"))  # leaves the selector
        await view_within(watcher, {})
    assert len(changes) == 4


@pytest.mark.parametrize("how", ["end", "drop"])
async def test_a_broken_watch_resumes_from_the_last_version_without_relisting(
    api: FakeKubeAPI, tmp_path: Path, how: str
) -> None:
    api.add_pod(pod("a", "10.0.0.1"))
    async with watching(api, tmp_path) as watcher:
        api.add_pod(pod("b", "10.0.0.2"))
        await caught_up(watcher, api)
        last_seen = watcher.resource_version
        (api.end_watches if how == "end" else api.drop_watches)()
        api.delete_pod("a")  # while no watch is open: the next one replays it
        api.add_pod(pod("c", "10.0.0.3"))
        await view_within(watcher, {LLAMA: ("http://10.0.0.2:8000", "http://10.0.0.3:8000")})
        await within(lambda: api.watching == 1)
    assert api.verbs() == ["list", "watch", "watch"]
    resumed = api.requests[2].query
    assert resumed["resourceVersion"] == last_seen
    assert resumed["allowWatchBookmarks"] == "true"


@pytest.mark.parametrize("gone_as", ["event", "status"])
async def test_410_gone_relists_and_converges(tmp_path: Path, gone_as: Literal["event", "status"]) -> None:
    async with FakeKubeAPI(token=TOKEN, gone_as=gone_as) as api:
        api.add_pod(pod("a", "10.0.0.1"))
        api.add_pod(pod("b", "10.0.0.2"))
        async with watching(api, tmp_path) as watcher:
            await within(lambda: api.watching == 1)
            api.drop_watches()
            api.delete_pod("a")
            api.set_ready("b", False)
            api.add_pod(pod("c", "10.0.0.3"))
            api.add_pod(pod("p", "10.0.0.4", role="prefill"))
            api.expire_history()  # the changes above can no longer be replayed
            await view_within(watcher, {LLAMA: ("http://10.0.0.3:8000",), prefill_pool(LLAMA): ("http://10.0.0.4:8000",)})
            await within(lambda: api.watching == 1)
            assert watcher.resource_version == api.resource_version
        assert api.verbs() == ["list", "watch", "watch", "list", "watch"]
        assert api.requests[4].query["resourceVersion"] == api.resource_version


async def test_changes_past_the_bounded_history_force_a_relist(tmp_path: Path) -> None:
    async with FakeKubeAPI(token=TOKEN, history=2) as api:
        api.add_pod(pod("a", "10.0.0.1"))
        async with watching(api, tmp_path) as watcher:
            await within(lambda: api.watching == 1)
            api.drop_watches()
            for i in range(3):  # more changes than the history holds
                api.add_pod(pod(f"n-{i}", f"10.0.0.{10 + i}"))
            urls = ("http://10.0.0.1:8000", "http://10.0.0.10:8000", "http://10.0.0.11:8000", "http://10.0.0.12:8000")
            await view_within(watcher, {LLAMA: tuple(sorted(urls))})
        assert api.verbs()[:4] == ["list", "watch", "watch", "list"]


async def test_bookmarks_advance_the_version_a_watch_resumes_from(api: FakeKubeAPI, tmp_path: Path) -> None:
    async with watching(api, tmp_path) as watcher:
        await within(lambda: api.watching == 1)
        api.add_pod(make_pod("not-a-worker", model=LLAMA, labels={"app.kubernetes.io/name": "web"}))
        assert watcher.resource_version != api.resource_version  # the watch heard nothing
        api.bookmark()
        await caught_up(watcher, api)
        api.end_watches()
        await within(lambda: len(api.requests) == 3)
    assert api.requests[2].query["resourceVersion"] == api.resource_version


async def test_the_token_is_read_again_for_each_request(api: FakeKubeAPI, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("wrong\n")
    api.add_pod(pod("a", "10.0.0.1"))
    async with watching(api, tmp_path, sync_timeout_s=0.2) as watcher:
        assert dict(await watcher.endpoints()) == {}  # 401: no list yet, startup went on
        (tmp_path / "token").write_text(TOKEN)  # as the kubelet rotates it
        await view_within(watcher, {LLAMA: ("http://10.0.0.1:8000",)}, timeout_s=5.0)


# -- the pod -> endpoint contract -------------------------------------------------------


def test_pod_endpoint_rules(tmp_path: Path) -> None:
    stack = k8s_stack(tmp_path, "http://127.0.0.1:1")
    names = model_names(stack.models)
    assert pod_endpoint(pod("a", "fd00::5", port=8080), names, 8000) == (LLAMA, "http://[fd00::5]:8080")
    unannotated = pod("b", "10.0.0.2")
    del unannotated["metadata"]["annotations"]
    assert pod_endpoint(unannotated, names, 8000) == (LLAMA, "http://10.0.0.2:8000")  # by label value
    assert pod_endpoint(pod("c", "10.0.0.3", port=None), names, 7000) == (LLAMA, "http://10.0.0.3:7000")
    assert pod_endpoint(pod("d", "10.0.0.4", role="decode"), names, 8000) == (LLAMA, "http://10.0.0.4:8000")
    assert pod_endpoint(pod("e", "", ready=True), names, 8000) is None


# -- where the API is -------------------------------------------------------------------


def _config(**settings: Any) -> KubernetesDiscoveryConfig:
    return KubernetesDiscoveryConfig(**settings)


def test_in_cluster_reads_the_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "namespace").write_text("serving\n")
    shutil.copy(certifi.where(), tmp_path / "ca.crt")
    access = api_access(_config(service_account_dir=str(tmp_path)), environ={})
    assert (access.url, access.namespace, access.token_file) == (IN_CLUSTER_URL, "serving", str(tmp_path / "token"))
    assert access.ssl is not None
    assert api_access(_config(service_account_dir=str(tmp_path), namespace="other"), environ={}).namespace == "other"


def test_in_cluster_the_api_is_where_the_kubelet_says(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "namespace").write_text("serving\n")
    shutil.copy(certifi.where(), tmp_path / "ca.crt")
    config = _config(service_account_dir=str(tmp_path))

    def url(host: str, port: str) -> str:
        return api_access(config, environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}).url

    assert url("10.96.0.1", "443") == "https://10.96.0.1:443"
    assert url("fd00:10:96::1", "443") == "https://[fd00:10:96::1]:443"
    assert url("", "443") == IN_CLUSTER_URL  # both or neither, as client-go
    with pytest.raises(ConfigError, match=r"router\.discovery: KUBERNETES_SERVICE_PORT 'https' is not a port number"):
        url("10.96.0.1", "https")


def test_access_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not running in a cluster \(.*token is missing\); set api_url or kubeconfig"):
        api_access(_config(service_account_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"router\.discovery\.namespace: not set"):
        api_access(_config(api_url="http://127.0.0.1:1", service_account_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"router\.discovery\.kubeconfig .*cannot read it"):
        api_access(_config(kubeconfig=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="give api_url or kubeconfig, not both"):
        _config(api_url="http://127.0.0.1:1", kubeconfig="k")
    with pytest.raises(ConfigError, match=r"router\.discovery\.selector: 'bad key!' is not a Kubernetes label key"):
        parse_stack({"router": {"discovery": {"selector": {"bad key!": "x"}}},
                     "models": [{"name": "m", "task": "chat", "engine": "llamacpp", "source": "x"}]})


def _kubeconfig(tmp_path: Path, server: str, user: dict[str, Any], cluster: Mapping[str, Any] | None = None) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "corral"}}],
    }))
    return path


def test_a_kubeconfig_with_an_exec_plugin_is_refused(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path, "https://example.invalid", {"exec": {"command": "aws"}})
    with pytest.raises(ConfigError, match="exec plugin"):
        api_access(_config(kubeconfig=str(path)))


async def test_a_kubeconfig_reaches_the_api(api: FakeKubeAPI, tmp_path: Path) -> None:
    (tmp_path / "tok").write_text(TOKEN)
    path = _kubeconfig(tmp_path, api.url, {"tokenFile": "tok"})  # relative to the kubeconfig
    api.add_pod(pod("a", "10.0.0.1"))
    stack = k8s_stack(tmp_path, None, kubeconfig=str(path), namespace=None, token_file=None)
    assert stack.router.discovery is not None
    watcher = KubernetesDiscovery(stack.router.discovery, stack.models)
    try:
        assert dict(await watcher.endpoints()) == {LLAMA: ("http://10.0.0.1:8000",)}
    finally:
        await watcher.aclose()
    assert api.requests[0].namespace == "corral"  # the context's namespace


# -- TLS: the API's CA and client certificates -------------------------------------------


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificates")
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
async def https_api(test_ca: ThrowawayCA) -> AsyncIterator[FakeKubeAPI]:
    async with FakeKubeAPI(token=TOKEN, ssl=test_ca.server_context()) as server:
        yield server


def _pem_data(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@contextlib.asynccontextmanager
async def discovering(tmp_path: Path, **discovery: Any) -> AsyncIterator[KubernetesDiscovery]:
    """Discovery through ``discovery`` settings alone (token_file and namespace only if given)."""
    api_url = discovery.pop("api_url", None)
    stack = k8s_stack(tmp_path, api_url, **{"namespace": None, "token_file": None, **discovery})
    assert stack.router.discovery is not None
    watcher = KubernetesDiscovery(stack.router.discovery, stack.models)
    try:
        yield watcher
    finally:
        await watcher.aclose()


@pytest.mark.parametrize("how", ["certificate-authority", "certificate-authority-data", "api_url+ca_file"])
async def test_the_api_is_trusted_through_its_ca(
    https_api: FakeKubeAPI, test_ca: ThrowawayCA, tmp_path: Path, how: str
) -> None:
    shutil.copy(test_ca.ca, tmp_path / "cluster-ca.crt")
    https_api.add_pod(pod("a", "10.0.0.1"))
    if how == "api_url+ca_file":
        settings: dict[str, Any] = {"api_url": https_api.url, "ca_file": str(test_ca.ca),
                                    "token_file": str(tmp_path / "token"), "namespace": "corral"}
    else:
        ca = {"certificate-authority": "cluster-ca.crt"} if how == "certificate-authority" else {
            "certificate-authority-data": _pem_data(test_ca.ca)}
        settings = {"kubeconfig": str(_kubeconfig(tmp_path, https_api.url, {"token": TOKEN}, ca))}
    async with discovering(tmp_path, **settings) as watcher:
        assert dict(await watcher.endpoints()) == {LLAMA: ("http://10.0.0.1:8000",)}
        https_api.add_pod(pod("b", "10.0.0.2"))  # and the watch streams over TLS
        await view_within(watcher, {LLAMA: ("http://10.0.0.1:8000", "http://10.0.0.2:8000")})
    assert https_api.url.startswith("https://127.0.0.1:")
    assert https_api.verbs()[:2] == ["list", "watch"]


def _failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "corral.router.discovery.kubernetes" and r.levelno == logging.WARNING
            and "pod list at" in r.getMessage() and "failed" in r.getMessage()]


async def _refused_and_retried(watcher: KubernetesDiscovery, api: FakeKubeAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="corral.router.discovery.kubernetes")
    assert dict(await watcher.endpoints()) == {}  # startup goes on after sync_timeout_s
    await within(lambda: len(_failures(caplog)) >= 3, timeout_s=10.0)  # it keeps retrying
    assert dict(await watcher.endpoints()) == {}
    assert api.requests == []  # no request got past TLS


async def test_without_the_ca_the_api_is_not_trusted_and_discovery_retries(
    https_api: FakeKubeAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    https_api.add_pod(pod("a", "10.0.0.1"))
    path = _kubeconfig(tmp_path, https_api.url, {"token": TOKEN})  # the system's CAs only
    async with discovering(tmp_path, kubeconfig=str(path), sync_timeout_s=0.2) as watcher:
        await _refused_and_retried(watcher, https_api, caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in _failures(caplog)[0]


@pytest.mark.parametrize("inline", [False, True], ids=["files", "data"])
async def test_a_kubeconfig_client_certificate_passes_mutual_tls(
    test_ca: ThrowawayCA, tmp_path: Path, inline: bool
) -> None:
    if inline:
        user = {"client-certificate-data": _pem_data(test_ca.client_cert),
                "client-key-data": _pem_data(test_ca.client_key)}
    else:
        shutil.copy(test_ca.client_cert, tmp_path / "router.crt")
        shutil.copy(test_ca.client_key, tmp_path / "router.key")
        user = {"client-certificate": "router.crt", "client-key": "router.key"}
    async with FakeKubeAPI(ssl=test_ca.server_context(client_certs=True)) as api:  # no token: the certificate is the user
        api.add_pod(pod("a", "10.0.0.1"))
        path = _kubeconfig(tmp_path, api.url, user, {"certificate-authority-data": _pem_data(test_ca.ca)})
        async with discovering(tmp_path, kubeconfig=str(path)) as watcher:
            assert dict(await watcher.endpoints()) == {LLAMA: ("http://10.0.0.1:8000",)}
    assert api.requests[0].client_cn == ThrowawayCA.CLIENT_CN


async def test_mutual_tls_refuses_a_kubeconfig_without_a_client_certificate(
    test_ca: ThrowawayCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeKubeAPI(token=TOKEN, ssl=test_ca.server_context(client_certs=True)) as api:
        api.add_pod(pod("a", "10.0.0.1"))
        path = _kubeconfig(tmp_path, api.url, {"token": TOKEN}, {"certificate-authority-data": _pem_data(test_ca.ca)})
        async with discovering(tmp_path, kubeconfig=str(path), sync_timeout_s=0.2) as watcher:
            await _refused_and_retried(watcher, api, caplog)


async def test_in_cluster_the_service_account_ca_verifies_the_api(
    https_api: FakeKubeAPI, test_ca: ThrowawayCA, tmp_path: Path
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "namespace").write_text("corral")
    shutil.copy(test_ca.ca, account / "ca.crt")
    https_api.add_pod(pod("a", "10.0.0.1"))
    stack = k8s_stack(tmp_path, None, namespace=None, token_file=None, service_account_dir=str(account))
    assert stack.router.discovery is not None
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(https_api.port)}
    access = api_access(stack.router.discovery, environ=environ)
    assert access.url == https_api.url
    watcher = KubernetesDiscovery(stack.router.discovery, stack.models, access=access)
    try:
        assert dict(await watcher.endpoints()) == {LLAMA: ("http://10.0.0.1:8000",)}
    finally:
        await watcher.aclose()
    assert https_api.requests[0].namespace == "corral"  # the service account's namespace


# -- the router, end to end -------------------------------------------------------------


async def test_the_router_routes_to_pods_as_they_come_and_go(api: FakeKubeAPI, tmp_path: Path) -> None:
    w1, w2, prefill = FakeEngine("w1"), FakeEngine("w2"), FakeEngine("p")
    async with serving(w1, w2, prefill) as urls:
        ports = [int(url.rsplit(":", 1)[1]) for url in urls]
        api.add_pod(pod("w1", "127.0.0.1", port=ports[0]))
        stack = k8s_stack(tmp_path, api.url)
        async with serving_router(stack) as (router, app), aiohttp.ClientSession() as http:
            assert app.pool is not None
            pool = app.pool

            async def chat() -> str:
                async with http.post(router + "/v1/chat/completions",
                                     json={"model": "llama", "messages": [{"role": "user", "content": "hi"}]}) as reply:
                    assert reply.status == 200, await reply.text()
                    return reply.headers["x-corral-endpoint"]

            assert await chat() == urls[0]
            api.add_pod(pod("w2", "127.0.0.1", port=ports[1]))
            api.add_pod(pod("p", "127.0.0.1", port=ports[2], role="prefill"))
            # health_interval_s is 60: only the watch's wake-up can make these healthy this fast
            await within(lambda: {(e.url, e.healthy) for e in pool.endpoints(LLAMA)} == {(urls[0], True), (urls[1], True)})
            await within(lambda: [(e.url, e.healthy) for e in pool.endpoints(prefill_pool(LLAMA))] == [(urls[2], True)])
            api.terminate("w1")
            await within(lambda: [e.url for e in pool.endpoints(LLAMA)] == [urls[1]])
            assert {await chat() for _ in range(4)} == {urls[1]}
            async with http.get(router + "/ready") as ready:
                assert ready.status == 503  # embed-model has no pod
