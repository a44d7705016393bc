"""A model's vLLM workloads: one per role, each a Deployment or, when a replica spans
nodes, a LeaderWorkerSet; plus its LMCache ConfigMap, shared cache claim,
PodDisruptionBudget and queue autoscaler.

Roles: a model with ``prefill_replicas`` gets a ``prefill`` and a ``decode`` workload
(the router sends prefill work to the first and generation to the second); any other
model one ``both`` workload.

Autoscaling is a KEDA ``ScaledObject`` per workload with a Prometheus trigger on the sum of
``vllm:num_requests_waiting`` over the workload's pods, scaled at ``deploy.queue_target``
waiting requests per replica, between the model's replicas and ``deploy.worker_max_replicas``.
KEDA, not an HPA on custom metrics: the HPA route needs prometheus-adapter and a cluster-wide
rule per metric, while a ScaledObject carries its PromQL with it and scales any workload
with a ``/scale`` subresource (LeaderWorkerSet included). When a ScaledObject owns a
workload's replica count, the workload leaves ``replicas`` out, so that re-applying the
manifests does not reset what the autoscaler chose (KEDA starts it at the minimum).
"""

from __future__ import annotations

from corral.config import ModelConfig, StackConfig
from corral.deploy.names import common_labels, label_value, resource_name
from corral.deploy.objects import Component, Object, metadata, obj
from corral.deploy.placement import Target, placement
from corral.deploy.vllm_pod import (
    LMCACHE_DIR,
    LMCACHE_FILE,
    PORT,
    WorkerSpec,
    pod_metadata,
    pod_spec,
    ray_worker_metadata,
    selector_labels,
)
from corral.engines.vllm import Role, VllmLaunch, vllm_launch

LWS_API = "leaderworkerset.x-k8s.io/v1"
KEDA_API = "keda.sh/v1alpha1"


def worker_specs(stack: StackConfig, model: ModelConfig, target: Target, redis_url: str | None) -> list[WorkerSpec]:
    """The model's workloads: ``both``, or ``prefill`` + ``decode``; none with 0 replicas."""
    where = placement(stack, model, target)
    roles: list[tuple[Role, int]] = (
        [("prefill", model.prefill_replicas), ("decode", model.decode_replicas)]
        if model.prefill_replicas
        else [("both", model.replicas)]
    )
    return [
        WorkerSpec(stack, model, role, replicas, _launch(stack, model, role, redis_url), where)
        for role, replicas in roles
        if replicas > 0
    ]


def _launch(stack: StackConfig, model: ModelConfig, role: Role, redis_url: str | None) -> VllmLaunch:
    """The adapter's command, listening on the port the pod declares, with LMCache's file where the pod mounts it."""
    return vllm_launch(stack, model, role=role, port=PORT, lmcache_config_path=f"{LMCACHE_DIR}/{LMCACHE_FILE}",
                       redis_url=redis_url)  # fmt: skip


def _labels(spec: WorkerSpec) -> dict[str, str]:
    return {**common_labels("worker"), **selector_labels(spec)}


def _replicas(spec: WorkerSpec) -> dict[str, int]:
    """``replicas`` unless an autoscaler owns the count."""
    return {} if spec.stack.deploy.autoscaling else {"replicas": spec.replicas}


def deployment(spec: WorkerSpec) -> Object:
    """A single-node replica set: rolls one new pod in before taking one out."""
    ns = spec.stack.deploy.namespace
    return obj("apps/v1", "Deployment", metadata(spec.name, ns, _labels(spec)), spec={
        **_replicas(spec),
        "selector": {"matchLabels": selector_labels(spec)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": pod_metadata(spec), "spec": pod_spec(spec)},
    })  # fmt: skip


def leader_worker_set(spec: WorkerSpec) -> Object:
    """A replica of ``pods_per_replica`` pods (one per node): the leader serves, the rest run Ray."""
    ns = spec.stack.deploy.namespace
    template = {
        "size": spec.placement.pods_per_replica,
        "restartPolicy": "RecreateGroupOnPodRestart",
        "leaderTemplate": {"metadata": pod_metadata(spec), "spec": pod_spec(spec, "leader")},
        "workerTemplate": {"metadata": ray_worker_metadata(spec), "spec": pod_spec(spec, "ray-worker")},
    }
    return obj(LWS_API, "LeaderWorkerSet", metadata(spec.name, ns, _labels(spec)), spec={
        **_replicas(spec),
        "startupPolicy": "LeaderCreated",
        "rolloutStrategy": {"type": "RollingUpdate",
                            "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0}},
        "leaderWorkerTemplate": template,
    })  # fmt: skip


def scaled_object(spec: WorkerSpec, workload: Object) -> Object:
    """KEDA: replicas = ceil(waiting requests / queue_target), within the model's bounds."""
    deploy = spec.stack.deploy
    query = (
        f'sum(vllm:num_requests_waiting{{namespace="{deploy.namespace}",'
        f'corral_dev_model="{label_value(spec.model.name)}",corral_dev_role="{spec.role}"}})'
    )
    trigger = {"type": "prometheus", "metadata": {
        "serverAddress": deploy.prometheus_url, "query": query, "threshold": f"{deploy.queue_target:g}",
    }}  # fmt: skip
    target = {"apiVersion": workload["apiVersion"], "kind": workload["kind"], "name": spec.name}
    return obj(KEDA_API, "ScaledObject", metadata(spec.name, deploy.namespace, _labels(spec)), spec={
        "scaleTargetRef": target,
        "minReplicaCount": spec.replicas,
        "maxReplicaCount": max(spec.replicas, deploy.worker_max_replicas),
        "pollingInterval": 15,
        "cooldownPeriod": 300,
        "triggers": [trigger],
    })  # fmt: skip


def disruption_budget(spec: WorkerSpec) -> Object:
    """A node drain takes at most one replica of the workload at a time."""
    ns = spec.stack.deploy.namespace
    return obj("policy/v1", "PodDisruptionBudget", metadata(spec.name, ns, _labels(spec)), spec={
        "maxUnavailable": 1, "selector": {"matchLabels": selector_labels(spec)},
    })  # fmt: skip


def lmcache_configmap(spec: WorkerSpec) -> Object:
    assert spec.launch.lmcache_config is not None
    meta = metadata(spec.lmcache_configmap, spec.stack.deploy.namespace, _labels(spec))
    return obj("v1", "ConfigMap", meta, data={LMCACHE_FILE: spec.launch.lmcache_config})


def shared_cache_claim(spec: WorkerSpec) -> Object:
    """``deploy.model_cache: shared``: one ReadWriteMany volume every replica of the model reads."""
    deploy = spec.stack.deploy
    claim: Object = {"accessModes": ["ReadWriteMany"]}
    if deploy.storage_class is not None:
        claim["storageClassName"] = deploy.storage_class
    claim["resources"] = {"requests": {"storage": deploy.model_cache_size}}
    meta = metadata(spec.model_cache_claim, deploy.namespace, common_labels("model-cache"))
    return obj("v1", "PersistentVolumeClaim", meta, spec=claim)


def workload_objects(spec: WorkerSpec) -> list[Object]:
    """Everything one role of a model needs, the workload after what it mounts."""
    objects: list[Object] = []
    if spec.launch.lmcache_config is not None:
        objects.append(lmcache_configmap(spec))
    workload = leader_worker_set(spec) if spec.placement.multi_node else deployment(spec)
    objects.append(workload)
    if not spec.placement.multi_node:
        objects.append(disruption_budget(spec))
    if spec.stack.deploy.autoscaling:
        objects.append(scaled_object(spec, workload))
    return objects


def model_component(specs: list[WorkerSpec], index: int) -> Component:
    """``manifests/30-<n>-<model>.yaml``: every workload of one model."""
    model = specs[0].model
    objects: list[Object] = []
    if model.gpu is not None and specs[0].stack.deploy.model_cache == "shared":
        objects.append(shared_cache_claim(specs[0]))
    for spec in specs:
        objects.extend(workload_objects(spec))
    return Component(f"manifests/30-{index:02d}-{resource_name(model.name)}.yaml", tuple(objects))
