"""The stack file -> every Kubernetes object of a deployment, one YAML file per component.

    render(stack, "eks")  ->  Rendering(components=(Component("manifests/00-namespace.yaml", ...), ...))
    write(rendering, out_dir)

Output layout (``kubectl apply -f DIR/manifests`` applies the files in name order):

=================================  ============================================================
``manifests/00-namespace.yaml``    Namespace
``manifests/05-network-policy``    NetworkPolicy: only corral's pods and Prometheus reach workers
``manifests/10-router.yaml``       stack ConfigMap, ServiceAccount/Role/RoleBinding, Deployment,
                                   Service, PodDisruptionBudget, HPA, Ingress (optional)
``manifests/20-redis.yaml``        Redis Deployment + Service (the stack needs one, names none)
``manifests/30-NN-<model>.yaml``   per model: LMCache ConfigMap, Deployment or LeaderWorkerSet
                                   per role, PodDisruptionBudget, KEDA ScaledObject
``manifests/40-monitoring.yaml``   workers Service, ServiceMonitors, PrometheusRule
``manifests/41-dashboards.yaml``   Grafana dashboards ConfigMap
``eksctl/cluster.yaml``            EKS only: eksctl ClusterConfig (for eksctl, not kubectl)
=================================  ============================================================

Every builder is a pure function of the validated stack: the same stack renders the same
bytes (the snapshot tests hold them), and a stack that cannot be deployed raises
:class:`~corral.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from corral.config import ModelConfig, StackConfig
from corral.deploy.cluster import cluster_components
from corral.deploy.eksctl import eksctl_component
from corral.deploy.monitoring import monitoring_components
from corral.deploy.names import label_value
from corral.deploy.objects import Component, Object, dump_yaml
from corral.deploy.placement import Target
from corral.deploy.redis import deploys_redis, redis_component, redis_url
from corral.deploy.router import router_component
from corral.deploy.vllm_pod import WorkerSpec
from corral.deploy.workers import model_component, worker_specs
from corral.errors import ConfigError

SUBDIRS = ("manifests", "eksctl")


class Rendering(NamedTuple):
    """What one `corral deploy render` writes."""

    target: Target
    components: tuple[Component, ...]

    def objects(self) -> Iterator[Object]:
        for component in self.components:
            yield from component.objects

    def kubernetes_objects(self) -> Iterator[Object]:
        """The objects for ``kubectl apply`` (everything under ``manifests/``)."""
        for component in self.components:
            if component.path.startswith("manifests/"):
                yield from component.objects

    def files(self) -> dict[str, str]:
        """Relative path -> YAML text."""
        header = f"# rendered by `corral deploy render --target {self.target}`: change the stack file, not this file\n"
        return {c.path: header + dump_yaml(c.objects) for c in self.components}


def _deployed(stack: StackConfig) -> list[ModelConfig]:
    """The models corral runs in the cluster: all of them, vLLM with replicas."""
    for model in stack.models:
        if model.replicas == 0:
            raise ConfigError(
                f"models ({model.name}).replicas: 0, but the in-cluster router finds workers by watching "
                "its pods only, so endpoints outside the cluster are not reached; give it replicas and gpu"
            )
        if model.engine != "vllm":
            raise ConfigError(
                f"models ({model.name}).engine: `corral deploy` runs vLLM workers on GPUs; '{model.engine}' "
                "models run under `corral up`"
            )
    return list(stack.models)


def _check_names(specs: list[WorkerSpec]) -> None:
    """Two models must not share a label value or a workload name (both are cut from the name)."""
    labels: dict[str, str] = {}
    names: dict[str, str] = {}
    for spec in specs:
        for key, seen in ((label_value(spec.model.name), labels), (spec.name, names)):
            other = seen.setdefault(key, spec.model.name)
            if other != spec.model.name:
                raise ConfigError(
                    f"models ({spec.model.name}).name: becomes '{key}' in Kubernetes, as model '{other}' "
                    "does; rename one"
                )


def render(stack: StackConfig, target: Target) -> Rendering:
    """Every object of ``stack`` deployed on ``target`` (``eks`` or ``onprem``)."""
    url = redis_url(stack)
    per_model = [worker_specs(stack, model, target, url) for model in _deployed(stack)]
    specs = [spec for specs in per_model for spec in specs]
    _check_names(specs)
    components = [*cluster_components(stack), router_component(stack, url)]
    if deploys_redis(stack):
        components.append(redis_component(stack))
    components += [model_component(specs, index) for index, specs in enumerate(per_model) if specs]
    if stack.deploy.monitoring:
        components += monitoring_components(stack, target)
    if target == "eks":
        components.append(eksctl_component(stack, specs))
    return Rendering(target, tuple(components))


def write(rendering: Rendering, out_dir: Path) -> list[Path]:
    """Write the files under ``out_dir``. YAML files already in its ``manifests/`` and
    ``eksctl/`` (an earlier render) are removed first, so a model taken out of the stack
    leaves no stale manifest behind; nothing else in ``out_dir`` is touched."""
    try:
        for sub in SUBDIRS:
            for old in sorted((out_dir / sub).glob("*.yaml")):
                old.unlink()
        written: list[Path] = []
        for relative, text in rendering.files().items():
            path = out_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise ConfigError(f"-o {out_dir}: cannot write the manifests: {exc}") from None
    return written
