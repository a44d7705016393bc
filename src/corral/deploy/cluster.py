"""What the namespace holds before any workload: the Namespace, and a NetworkPolicy that
lets only corral's own pods (and Prometheus) reach the vLLM workers and Redis.

The workers answer anyone who reaches them unless ``deploy.worker_api_key_secret`` gives
vLLM a key; the policy keeps the rest of the cluster out either way (it takes effect where
the network plugin enforces NetworkPolicy: Calico, Cilium, the VPC CNI with its policy
agent on EKS).
"""

from __future__ import annotations

from corral.config import StackConfig
from corral.deploy.names import COMPONENT, PART_OF, common_labels
from corral.deploy.objects import Component, Object, metadata, obj

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def namespace(stack: StackConfig) -> Object:
    return obj("v1", "Namespace", metadata(stack.deploy.namespace, None, common_labels("namespace")))


def network_policy(stack: StackConfig) -> Object:
    deploy = stack.deploy
    selected = {"matchExpressions": [{"key": COMPONENT, "operator": "In", "values": ["redis", "worker"]}]}
    from_corral = {"from": [{"podSelector": {"matchLabels": {PART_OF: "corral"}}}]}
    from_prometheus = {
        "from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: deploy.monitoring_namespace}}}],
        "ports": [{"port": "http", "protocol": "TCP"}],
    }
    meta = metadata("corral-internal", deploy.namespace, common_labels("network"))
    return obj("networking.k8s.io/v1", "NetworkPolicy", meta, spec={
        "podSelector": selected, "policyTypes": ["Ingress"], "ingress": [from_corral, from_prometheus],
    })  # fmt: skip


def cluster_components(stack: StackConfig) -> list[Component]:
    """``manifests/00-namespace.yaml`` and ``manifests/05-network-policy.yaml``."""
    return [
        Component("manifests/00-namespace.yaml", (namespace(stack),)),
        Component("manifests/05-network-policy.yaml", (network_policy(stack),)),
    ]
