"""The pod of one vLLM replica (or, for a replica spanning nodes, its leader and Ray workers).

The container runs :func:`corral.engines.vllm.vllm_launch`'s command unchanged (single
node) or after joining a Ray cluster (multi-node: the leader starts Ray's head, waits
until every GPU of the replica has joined, then runs `vllm serve` with
``--distributed-executor-backend ray``; each worker joins the head at
``$LWS_LEADER_ADDRESS``, which the LeaderWorkerSet controller sets).

Every serving pod has: ``nvidia.com/gpu`` per pod, the GPU node selector and toleration
of its :class:`~corral.deploy.placement.Placement`, a memory-backed ``/dev/shm`` (NCCL and
vLLM's workers share tensors through it), the model cache volume at the Hugging Face
cache path, startup/readiness/liveness probes on ``/health``, a preStop sleep so that
routers stop sending before vLLM drains, and its keys from Secrets (``HF_TOKEN``, and
``VLLM_API_KEY`` when ``deploy.worker_api_key_secret`` is set).
"""

from __future__ import annotations

import shlex
from typing import Literal, NamedTuple

from corral.config import ModelConfig, StackConfig, VllmConfig
from corral.deploy.names import (
    MODEL_LABEL,
    MODEL_NAME_ANNOTATION,
    NAME,
    RAY_WORKER,
    ROLE_LABEL,
    WORKER,
    common_labels,
    label_value,
    resource_name,
)
from corral.deploy.objects import Object
from corral.deploy.placement import Placement
from corral.engines.vllm import API_KEY_ENV, DEFAULT_CACHE_DIR, Role, VllmLaunch

PORT = 8000
HF_CACHE_PATH = "/root/.cache/huggingface"
LMCACHE_DIR = "/etc/corral"
LMCACHE_FILE = "lmcache.yaml"
RAY_PORT = 6379
GPU_RESOURCE = "nvidia.com/gpu"


class WorkerSpec(NamedTuple):
    """One Deployment or LeaderWorkerSet of a model: its role, replicas and launch."""

    stack: StackConfig
    model: ModelConfig
    role: Role
    replicas: int
    launch: VllmLaunch
    placement: Placement

    @property
    def name(self) -> str:
        """The workload's name: ``vllm-<model>`` plus ``-prefill`` / ``-decode`` for a split model."""
        parts = ("vllm", self.model.name) if self.role == "both" else ("vllm", self.model.name, self.role)
        return resource_name(*parts, limit=50)

    @property
    def lmcache_configmap(self) -> str:
        return f"{self.name}-lmcache"

    @property
    def model_cache_claim(self) -> str:
        """The shared cache's PersistentVolumeClaim (``deploy.model_cache: shared``): one per model."""
        return resource_name("model-cache", self.model.name, limit=60)


def selector_labels(spec: WorkerSpec, name: str = WORKER) -> dict[str, str]:
    """What a workload selects its pods by (and the router's discovery watches)."""
    return {NAME: name, MODEL_LABEL: label_value(spec.model.name), ROLE_LABEL: spec.role}


def pod_metadata(spec: WorkerSpec, name: str = WORKER) -> Object:
    labels = {**common_labels("worker"), **selector_labels(spec, name)}
    return {"labels": labels, "annotations": {MODEL_NAME_ANNOTATION: spec.model.name}}


def leader_script(spec: WorkerSpec) -> str:
    """Ray head, wait for the replica's GPUs, then `vllm serve` on Ray."""
    gpus = spec.placement.gpus_per_pod * spec.placement.pods_per_replica
    args = list(spec.launch.args)
    if "--distributed-executor-backend" not in args:
        args += ["--distributed-executor-backend", "ray"]
    wait = (
        'import ray, sys; ray.init(address="auto", logging_level="ERROR"); '
        f'sys.exit(0 if ray.cluster_resources().get("GPU", 0) >= {gpus} else 1)'
    )
    return "\n".join([
        "set -e",
        f"ray start --head --port={RAY_PORT}",
        f"until python3 -c {shlex.quote(wait)}; do echo 'waiting for {gpus} GPUs to join Ray'; sleep 5; done",
        f"exec {shlex.join(args)}",
        "",
    ])  # fmt: skip


def worker_script() -> str:
    """A Ray worker: join the leader's head (retrying until it is up) and block."""
    join = f'ray start --address="$LWS_LEADER_ADDRESS:{RAY_PORT}" --block'
    return f"until {join}; do echo 'waiting for the Ray head'; sleep 5; done\n"


def _env(spec: WorkerSpec) -> list[Object]:
    deploy = spec.stack.deploy
    env: list[Object] = [{"name": key, "value": value} for key, value in sorted(spec.launch.env.items())]
    env.append({"name": "HF_HOME", "value": HF_CACHE_PATH})
    env.append(_secret_env("HF_TOKEN", deploy.hf_token_secret, "token"))
    if deploy.worker_api_key_secret is not None:
        env.append(_secret_env(API_KEY_ENV, deploy.worker_api_key_secret, "api-key", optional=False))
    return env


def _secret_env(name: str, secret: str, key: str, *, optional: bool = True) -> Object:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


def _ports(spec: WorkerSpec) -> list[Object]:
    ports: list[Object] = [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    if "--kv-events-config" in spec.launch.args:
        config = spec.model.vllm or VllmConfig()
        ports.append({"name": "kv-events", "containerPort": config.kv_events_port, "protocol": "TCP"})
        if config.kv_events_replay_port is not None:
            ports.append({"name": "kv-replay", "containerPort": config.kv_events_replay_port, "protocol": "TCP"})
    return ports


def _probes(spec: WorkerSpec) -> dict[str, Object]:
    def probe(period_s: int, failures: int) -> Object:
        return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period_s,
                "timeoutSeconds": 5, "failureThreshold": failures}  # fmt: skip

    startup_failures = -(-spec.stack.deploy.worker_startup_timeout_s // 10)
    return {
        "startupProbe": probe(10, startup_failures),
        "readinessProbe": probe(5, 3),
        "livenessProbe": probe(10, 6),
    }


def _mounts(spec: WorkerSpec) -> list[Object]:
    mounts: list[Object] = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": HF_CACHE_PATH},
    ]
    if spec.launch.lmcache_config is not None:
        mounts.append({"name": "lmcache", "mountPath": LMCACHE_DIR, "readOnly": True})
    if spec.stack.cache.disk is not None and spec.launch.lmcache_config is not None:
        mounts.append({"name": "kv-disk", "mountPath": DEFAULT_CACHE_DIR})
    return mounts


def _model_cache_volume(spec: WorkerSpec) -> Object:
    deploy = spec.stack.deploy
    if deploy.model_cache == "shared":
        return {"name": "model-cache", "persistentVolumeClaim": {"claimName": spec.model_cache_claim}}
    claim: Object = {"accessModes": ["ReadWriteOnce"]}
    if deploy.storage_class is not None:
        claim["storageClassName"] = deploy.storage_class
    claim["resources"] = {"requests": {"storage": deploy.model_cache_size}}
    template = {"metadata": {"labels": common_labels("model-cache")}, "spec": claim}
    return {"name": "model-cache", "ephemeral": {"volumeClaimTemplate": template}}


def _volumes(spec: WorkerSpec) -> list[Object]:
    volumes: list[Object] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.stack.deploy.shm_size}},
        _model_cache_volume(spec),
    ]
    if spec.launch.lmcache_config is not None:
        volumes.append({"name": "lmcache", "configMap": {"name": spec.lmcache_configmap}})
    disk = spec.stack.cache.disk
    if disk is not None and spec.launch.lmcache_config is not None:
        size_mib = -(-disk.max_bytes * 11 // 10 // 1024**2)  # LMCache's bound plus 10 % for its files
        volumes.append({"name": "kv-disk", "emptyDir": {"sizeLimit": f"{size_mib}Mi"}})
    return volumes


def _container(spec: WorkerSpec, command: list[str], *, serving: bool) -> Object:
    container: Object = {
        "name": "vllm",
        "image": spec.stack.deploy.vllm_image,
        "command": command,
        "env": _env(spec),
    }
    if serving:
        container["ports"] = _ports(spec)
    gpus = str(spec.placement.gpus_per_pod)
    container["resources"] = {"limits": {GPU_RESOURCE: gpus}, "requests": {GPU_RESOURCE: gpus}}
    container["volumeMounts"] = _mounts(spec)
    if serving:
        container.update(_probes(spec))
        sleep = ["sleep", str(spec.stack.deploy.prestop_sleep_s)]
        container["lifecycle"] = {"preStop": {"exec": {"command": sleep}}}
    return container


PodKind = Literal["single", "leader", "ray-worker"]


def pod_spec(spec: WorkerSpec, kind: PodKind = "single") -> Object:
    """The pod spec of a whole replica (``single``), or a multi-node one's ``leader`` or ``ray-worker``."""
    if kind == "single":
        command = list(spec.launch.args)
    elif kind == "leader":
        command = ["/bin/sh", "-c", leader_script(spec)]
    else:
        command = ["/bin/sh", "-c", worker_script()]
    deploy = spec.stack.deploy
    pod: Object = {"terminationGracePeriodSeconds": deploy.prestop_sleep_s + int(spec.stack.worker.drain_timeout_s) + 10}
    if spec.placement.node_selector:
        pod["nodeSelector"] = dict(spec.placement.node_selector)
    pod["tolerations"] = [dict(t) for t in spec.placement.tolerations]
    pod["containers"] = [_container(spec, command, serving=kind != "ray-worker")]
    pod["volumes"] = _volumes(spec)
    return pod


def ray_worker_metadata(spec: WorkerSpec) -> Object:
    """Ray worker pods: same model and role labels, but not ``corral-worker`` (they serve nothing)."""
    return pod_metadata(spec, RAY_WORKER)
