"""Where a model's vLLM pods run: GPUs per pod, pods per replica, node selector, tolerations.

Per target:

- ``eks``: nodes are picked by ``node.kubernetes.io/instance-type`` = the model's
  ``gpu.instance`` (set by AWS on every node), and an instance's GPU count comes from
  corral's catalog (src/corral/catalog/instances.py).
- ``onprem``: nodes are picked by ``deploy.gpu_node_label`` = the model's ``gpu.type`` (or
  its ``deploy.gpu_label_values`` entry: e.g. ``nvidia.com/gpu.product`` as GPU feature
  discovery sets it), and a node holds ``deploy.gpus_per_node`` GPUs.

Both add ``deploy.gpu_node_selector`` and tolerate the GPU taint ``deploy.gpu_taint_key``.
A replica needing more GPUs than one node has (tensor x pipeline parallel) spans
``tp * pp / node GPUs`` pods, one per node, run as a LeaderWorkerSet with Ray.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from corral.catalog.instances import INSTANCES, find_instance
from corral.config import ModelConfig, StackConfig
from corral.errors import ConfigError

Target = Literal["eks", "onprem"]
TARGETS: tuple[Target, ...] = ("eks", "onprem")
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


class Placement(NamedTuple):
    """How one replica of a model lands on nodes."""

    gpus_per_pod: int
    pods_per_replica: int
    node_gpus: int
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, str], ...]
    instance: str | None

    @property
    def multi_node(self) -> bool:
        return self.pods_per_replica > 1

    def nodes_for(self, replicas: int) -> int:
        """Nodes that hold ``replicas`` replicas (pods of one size pack onto a node)."""
        if self.multi_node:
            return replicas * self.pods_per_replica
        per_node = max(1, self.node_gpus // self.gpus_per_pod)
        return -(-replicas // per_node)


def _where(model: ModelConfig) -> str:
    return f"models ({model.name})"


def _eks_node(model: ModelConfig) -> tuple[int, dict[str, str], str]:
    assert model.gpu is not None
    name = model.gpu.instance
    if name is None:
        raise ConfigError(
            f"{_where(model)}.gpu.instance: --target eks needs the instance type of the GPU nodes "
            "(`corral plan --emit` writes it, e.g. g6e.xlarge)"
        )
    instance = find_instance(name)
    if instance is None or instance.provider != "aws":
        known = ", ".join(i.name for i in INSTANCES)
        raise ConfigError(f"{_where(model)}.gpu.instance: '{name}' is not in corral's AWS catalog (known: {known})")
    if instance.gpu != model.gpu.type:
        raise ConfigError(
            f"{_where(model)}.gpu: instance {instance.name} has {instance.gpu} GPUs, not {model.gpu.type}"
        )
    return instance.gpu_count, {INSTANCE_TYPE_LABEL: instance.name}, instance.name


def _onprem_node(stack: StackConfig, model: ModelConfig) -> tuple[int, dict[str, str]]:
    assert model.gpu is not None
    deploy = stack.deploy
    selector: dict[str, str] = {}
    if deploy.gpu_node_label is not None:
        selector[deploy.gpu_node_label] = deploy.gpu_label_values.get(model.gpu.type, model.gpu.type)
    return deploy.gpus_per_node, selector


def placement(stack: StackConfig, model: ModelConfig, target: Target) -> Placement:
    """Where ``model``'s pods go on ``target``; a ConfigError names the field that does not fit."""
    if model.gpu is None:
        raise ConfigError(f"{_where(model)}.gpu: `corral deploy` needs the GPUs of a replica (type, count)")
    if target == "eks":
        node_gpus, selector, instance = _eks_node(model)
    else:
        (node_gpus, selector), instance = _onprem_node(stack, model), None
    gpus = model.gpu.count
    if gpus <= node_gpus:
        pods, per_pod = 1, gpus
    elif gpus % node_gpus == 0:
        pods, per_pod = gpus // node_gpus, node_gpus
    else:
        field = "gpu.instance" if target == "eks" else "deploy.gpus_per_node"
        raise ConfigError(
            f"{_where(model)}.gpu.count: {gpus} GPUs per replica span nodes of {node_gpus} GPUs ({field}) "
            "unevenly; use a multiple of the node's GPUs"
        )
    selector.update(stack.deploy.gpu_node_selector)
    toleration = {"key": stack.deploy.gpu_taint_key, "operator": "Exists", "effect": "NoSchedule"}
    return Placement(per_pod, pods, node_gpus, selector, (toleration,), instance)
