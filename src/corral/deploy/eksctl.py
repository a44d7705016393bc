"""EKS only: an eksctl ClusterConfig (``eksctl.io/v1alpha5``) for ``eksctl create cluster -f``.

A ``system`` managed node group (router, Redis, operators) and one GPU node group per
instance type the models' ``gpu.instance`` name, sized for the replicas: its minimum holds
every model's least replicas, its maximum what the queue autoscalers may reach (a cluster
autoscaler or Karpenter adds the nodes between). GPU nodes are tainted
``deploy.gpu_taint_key=true:NoSchedule`` so that only vLLM pods, which tolerate it, land
there, and labelled ``corral.dev/gpu`` and ``corral.dev/node-pool``. A node group whose
replicas span nodes gets EFA (``efaEnabled``: eksctl adds the placement group, the
security group and the EFA device plugin) and must sit in one availability zone
(``deploy.eks_gpu_zone``). Add-ons: the VPC CNI, CoreDNS, kube-proxy and the EBS CSI
driver (model cache volumes; the EFS one too for ``deploy.model_cache: shared``).
"""

from __future__ import annotations

from corral.config import StackConfig
from corral.deploy.objects import Component, Object, obj
from corral.deploy.vllm_pod import WorkerSpec
from corral.errors import ConfigError

EKSCTL_API = "eksctl.io/v1alpha5"
POOL_LABEL = "corral.dev/node-pool"
GPU_LABEL = "corral.dev/gpu"


def _node_bounds(specs: list[WorkerSpec]) -> tuple[int, int]:
    """(least, most) nodes that the workloads on one instance type need."""
    least = sum(spec.placement.nodes_for(spec.replicas) for spec in specs)
    deploy = specs[0].stack.deploy
    most = sum(
        spec.placement.nodes_for(max(spec.replicas, deploy.worker_max_replicas) if deploy.autoscaling else spec.replicas)
        for spec in specs
    )
    return least, most


def _gpu_group(stack: StackConfig, instance: str, specs: list[WorkerSpec]) -> Object:
    deploy = stack.deploy
    least, most = _node_bounds(specs)
    assert specs[0].model.gpu is not None
    group: Object = {
        "name": "gpu-" + instance.replace(".", "-"),
        "instanceType": instance,
        "amiFamily": "AmazonLinux2023",
        "minSize": least,
        "desiredCapacity": least,
        "maxSize": most,
        "volumeSize": deploy.eks_gpu_volume_gib,
        "labels": {POOL_LABEL: "gpu", GPU_LABEL: specs[0].model.gpu.type},
        "taints": [{"key": deploy.gpu_taint_key, "value": "true", "effect": "NoSchedule"}],
        "propagateASGTags": True,
    }
    if deploy.eks_gpu_zone is not None:
        group["availabilityZones"] = [deploy.eks_gpu_zone]
    if any(spec.placement.multi_node for spec in specs):
        if deploy.eks_gpu_zone is None:
            raise ConfigError(
                f"deploy.eks_gpu_zone: replicas on {instance} span nodes, which EFA needs in one availability "
                f"zone; name it (e.g. {deploy.eks_region}a)"
            )
        group["efaEnabled"] = True
    return group


def _system_group(stack: StackConfig) -> Object:
    deploy = stack.deploy
    return {
        "name": "system",
        "instanceType": deploy.eks_system_instance_type,
        "minSize": deploy.eks_system_nodes,
        "desiredCapacity": deploy.eks_system_nodes,
        "maxSize": deploy.eks_system_nodes + 2,
        "labels": {POOL_LABEL: "system"},
        "iam": {"withAddonPolicies": {"autoScaler": True}},
    }


def _addons(stack: StackConfig) -> list[Object]:
    addons: list[Object] = [
        {"name": "vpc-cni"},
        {"name": "coredns"},
        {"name": "kube-proxy"},
        {"name": "aws-ebs-csi-driver", "wellKnownPolicies": {"ebsCSIController": True}},
    ]
    if stack.deploy.model_cache == "shared":
        addons.append({"name": "aws-efs-csi-driver", "wellKnownPolicies": {"efsCSIController": True}})
    return addons


def cluster_config(stack: StackConfig, specs: list[WorkerSpec]) -> Object:
    deploy = stack.deploy
    by_instance: dict[str, list[WorkerSpec]] = {}
    for spec in specs:
        assert spec.placement.instance is not None  # eks placements always name one
        by_instance.setdefault(spec.placement.instance, []).append(spec)
    groups = [_system_group(stack)] + [_gpu_group(stack, name, group) for name, group in by_instance.items()]
    meta = {"name": deploy.eks_cluster_name, "region": deploy.eks_region, "version": deploy.kubernetes_version}
    return obj(EKSCTL_API, "ClusterConfig", meta, iam={"withOIDC": True}, addons=_addons(stack),
               managedNodeGroups=groups)


def eksctl_component(stack: StackConfig, specs: list[WorkerSpec]) -> Component:
    """``eksctl/cluster.yaml``: not for kubectl (eksctl reads it)."""
    return Component("eksctl/cluster.yaml", (cluster_config(stack, specs),))
