"""Offline checks of rendered objects: Kubernetes' own schemas for the built-in kinds, and
the basic shape of the custom resources and of eksctl's ClusterConfig.

Built-in kinds (Namespace, Deployment, Service, ...) are validated with
`kubernetes-validate <https://github.com/willthames/kubernetes-validate>`_, whose package
carries the OpenAPI-derived JSON schemas of Kubernetes 1.25 to 1.37, in strict mode (an
unknown field is an error), against ``deploy.kubernetes_version``. No network is needed.
It is a test dependency; without it these checks are skipped and the CLI says so.

Custom resources have no schema in that package (their CRDs belong to KEDA, the
Prometheus operator, LeaderWorkerSet). They are checked here, by hand, for what the
controllers reject outright or silently ignore: ``apiVersion``, ``kind``, a DNS-1123
``metadata.name`` and ``namespace``, and the ``spec`` fields corral relies on with their
types. A LeaderWorkerSet's leader and worker pod templates are validated as core
``PodTemplate`` objects, so the pods it makes get the full schema check too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from corral.deploy.objects import Object
from corral.deploy.render import Rendering

CORE_GROUPS = frozenset({
    "v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "rbac.authorization.k8s.io/v1",
    "networking.k8s.io/v1", "storage.k8s.io/v1",
})  # fmt: skip
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Problem(NamedTuple):
    """One object that failed a check: ``where`` is ``file: Kind/name``."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def core_validation_available() -> bool:
    """Whether kubernetes-validate is installed (``corral[deploy]``; the tests have it)."""
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        return False
    return True


def supported_versions() -> list[str]:
    """Kubernetes minor versions kubernetes-validate has schemas for (empty: not installed)."""
    if not core_validation_available():
        return []
    from kubernetes_validate import utils

    return sorted({utils.major_minor(v) for v in utils.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))


def _core(item: Object, version: str) -> list[str]:
    from kubernetes_validate import utils

    try:
        utils.validate(item, version, strict=True)
    except utils.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path) or "(top level)"
        return [f"{path}: {exc.message}"]
    except utils.SchemaNotFoundError as exc:
        return [str(exc.message)]
    return []


def _get(item: Object, path: str) -> Any:
    node: Any = item
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _require(item: Object, fields: Iterable[tuple[str, type | tuple[type, ...]]]) -> list[str]:
    problems = []
    for path, kind in fields:
        value = _get(item, path)
        if value is None:
            problems.append(f"{path}: missing")
        elif not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            problems.append(f"{path}: {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return problems


def _each(items: Any, path: str, fields: tuple[tuple[str, type | tuple[type, ...]], ...]) -> list[str]:
    if not isinstance(items, list) or not items:
        return [f"{path}: must be a non-empty list"]
    return [f"{path}[{i}].{p}" for i, entry in enumerate(items) for p in _require(entry, fields)]


def _service_monitor(item: Object, version: str) -> list[str]:
    return _require(item, [("spec.selector.matchLabels", dict)]) + _each(
        _get(item, "spec.endpoints"), "spec.endpoints", (("port", str), ("path", str)))


def _prometheus_rule(item: Object, version: str) -> list[str]:
    groups = _get(item, "spec.groups")
    problems = _each(groups, "spec.groups", (("name", str), ("rules", list)))
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        problems += _each(group.get("rules"), f"spec.groups[{i}].rules", (("alert", str), ("expr", str)))
    return problems


def _scaled_object(item: Object, version: str) -> list[str]:
    problems = _require(item, [("spec.scaleTargetRef.name", str), ("spec.scaleTargetRef.kind", str),
                               ("spec.minReplicaCount", int), ("spec.maxReplicaCount", int)])  # fmt: skip
    problems += _each(_get(item, "spec.triggers"), "spec.triggers", (("type", str), ("metadata", dict)))
    for i, trigger in enumerate(_get(item, "spec.triggers") or []):
        for key, value in (trigger.get("metadata") or {}).items():
            if not isinstance(value, str):
                problems.append(f"spec.triggers[{i}].metadata.{key}: KEDA takes strings only")
    low, high = _get(item, "spec.minReplicaCount"), _get(item, "spec.maxReplicaCount")
    if isinstance(low, int) and isinstance(high, int) and not 0 <= low <= high:
        problems.append(f"spec: minReplicaCount {low} must be 0..maxReplicaCount {high}")
    return problems


def _pod_template(template: Any, version: str, path: str) -> list[str]:
    if not isinstance(template, dict):
        return [f"{path}: missing"]
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    if not core_validation_available():
        return _require(wrapper, [("template.spec.containers", list)])
    return [f"{path}.{problem.removeprefix('template.')}" for problem in _core(wrapper, version)]


def _leader_worker_set(item: Object, version: str) -> list[str]:
    problems = _require(item, [("spec.leaderWorkerTemplate.size", int)])
    size = _get(item, "spec.leaderWorkerTemplate.size")
    if isinstance(size, int) and size < 1:
        problems.append("spec.leaderWorkerTemplate.size: must be >= 1")
    for part in ("leaderTemplate", "workerTemplate"):
        path = f"spec.leaderWorkerTemplate.{part}"
        problems += _pod_template(_get(item, path), version, path)
    return problems


def _cluster_config(item: Object, version: str) -> list[str]:
    problems = _require(item, [("metadata.region", str), ("metadata.version", str)])
    groups = _get(item, "managedNodeGroups")
    problems += _each(groups, "managedNodeGroups", (("name", str), ("instanceType", str), ("minSize", int),
                                                    ("desiredCapacity", int), ("maxSize", int)))  # fmt: skip
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        sizes = [group.get(key) for key in ("minSize", "desiredCapacity", "maxSize")]
        if all(isinstance(size, int) for size in sizes) and not sizes[0] <= sizes[1] <= sizes[2]:
            problems.append(f"managedNodeGroups[{i}]: needs minSize <= desiredCapacity <= maxSize (got {sizes})")
    return problems


Check = Callable[[Object, str], list[str]]
#: (apiVersion, kind) -> its shape check, for the kinds outside Kubernetes' own schemas.
CUSTOM: dict[tuple[str, str], Check] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): _prometheus_rule,
    ("keda.sh/v1alpha1", "ScaledObject"): _scaled_object,
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): _leader_worker_set,
    ("eksctl.io/v1alpha5", "ClusterConfig"): _cluster_config,
}
#: Kinds that live in no namespace.
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterConfig"})


def _metadata(item: Object) -> list[str]:
    name, namespace = _get(item, "metadata.name"), _get(item, "metadata.namespace")
    problems = [] if isinstance(name, str) and _DNS_LABEL.match(name) else [f"metadata.name: {name!r} is not a DNS-1123 label"]
    if item.get("kind") not in CLUSTER_SCOPED and not (isinstance(namespace, str) and _DNS_LABEL.match(namespace)):
        problems.append(f"metadata.namespace: {namespace!r} is not a namespace name")
    return problems


def check_object(item: Object, version: str) -> list[str]:
    """Problems of one object (empty: it passed); core kinds need kubernetes-validate installed."""
    api, kind = item.get("apiVersion"), item.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        return ["apiVersion and kind: missing"]
    if (api, kind) in CUSTOM:
        return _metadata(item) + CUSTOM[(api, kind)](item, version)
    if api in CORE_GROUPS:
        return _core(item, version) if core_validation_available() else []
    return [f"{api} {kind}: no schema known to corral"]


def validate_rendering(rendering: Rendering, version: str) -> list[Problem]:
    """Every object of ``rendering`` against Kubernetes ``version`` (e.g. ``1.33``)."""
    known = supported_versions()
    if known and version not in known:
        return [Problem("deploy.kubernetes_version", f"no schemas for Kubernetes {version} "
                        f"(kubernetes-validate has {known[0]} to {known[-1]})")]
    problems = []
    for component in rendering.components:
        for item in component.objects:
            where = f"{component.path}: {item.get('kind')}/{_get(item, 'metadata.name')}"
            problems += [Problem(where, message) for message in check_object(item, version)]
    return problems
