"""The rendered objects, inspected as dicts: router, vLLM workloads, Redis, monitoring, eksctl."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from tests.deploy.support import example, find, one, stack, vllm_model

from corral.config import parse_stack
from corral.deploy.names import MODEL_LABEL, MODEL_NAME_ANNOTATION, NAME, ROLE_LABEL
from corral.deploy.render import render, write
from corral.deploy.vllm_pod import HF_CACHE_PATH
from corral.engines.vllm import vllm_launch
from corral.errors import ConfigError
from corral.observability.alerts import alert_rules
from corral.observability.dashboards import dashboards

REDIS_URL = "redis://corral-redis.corral.svc:6379/0"


def _pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _container(workload: dict) -> dict:
    return _pod(workload)["containers"][0]


def test_small_example_renders_the_expected_files():
    rendering = render(example("small"), "eks")
    assert [c.path for c in rendering.components] == [
        "manifests/00-namespace.yaml", "manifests/05-network-policy.yaml", "manifests/10-router.yaml",
        "manifests/30-00-llama-3-1-8b.yaml", "manifests/40-monitoring.yaml", "manifests/41-dashboards.yaml",
        "eksctl/cluster.yaml",
    ]  # fmt: skip
    assert "eksctl/cluster.yaml" not in [c.path for c in render(example("small"), "onprem").components]


def test_router_has_two_replicas_at_least_and_may_watch_pods_only():
    rendering = render(example("small"), "eks")
    deployment = one(rendering, "Deployment", "corral-router")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    hpa = one(rendering, "HorizontalPodAutoscaler", "corral-router")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert one(rendering, "PodDisruptionBudget", "corral-router")["spec"]["minAvailable"] == 1
    role = one(rendering, "Role", "corral-router")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = one(rendering, "RoleBinding", "corral-router")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "corral-router", "namespace": "corral"}]
    assert _pod(deployment)["serviceAccountName"] == "corral-router"
    keys = _container(deployment)["env"][0]
    assert keys["name"] == "CORRAL_API_KEYS" and keys["valueFrom"]["secretKeyRef"]["optional"] is True


def test_fixed_router_replicas_without_autoscaler():
    rendering = render(stack(deploy={"router_replicas": 3, "router_max_replicas": 3}), "onprem")
    assert one(rendering, "Deployment", "corral-router")["spec"]["replicas"] == 3
    assert not find(rendering, "HorizontalPodAutoscaler")


def test_router_replicas_below_two_are_refused():
    with pytest.raises(ConfigError, match=r"deploy.router_replicas: Input should be greater than or equal to 2"):
        stack(deploy={"router_replicas": 1})


def test_router_reads_the_stack_with_kubernetes_discovery_and_the_cluster_redis():
    config = example("medium")
    rendering = render(config, "eks")
    text = one(rendering, "ConfigMap", "corral-stack")["data"]["stack.yaml"]
    routed = parse_stack(yaml.safe_load(text))
    assert routed.router.host == "0.0.0.0" and routed.router.discovery is not None
    assert (routed.router.discovery.kind, routed.router.discovery.namespace) == ("kubernetes", "corral")
    assert routed.redis.url == REDIS_URL
    assert "deploy" not in yaml.safe_load(text)
    assert routed.models == config.models
    command = _container(one(rendering, "Deployment", "corral-router"))["command"]
    assert command == ["corral", "router", "--stack", "/etc/corral/stack.yaml", "--host", "0.0.0.0", "--port", "8000"]


def test_a_vllm_deployment_runs_the_adapters_command_on_its_gpus():
    config = example("small")
    rendering = render(config, "eks")
    model = config.models[0]
    deployment = one(rendering, "Deployment", "vllm-llama-3-1-8b")
    container = _container(deployment)
    assert container["command"] == list(vllm_launch(config, model).args)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    pod = _pod(deployment)
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g6e.xlarge"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    assert "ephemeral" in volumes["model-cache"]
    assert {"name": "model-cache", "mountPath": HF_CACHE_PATH} in container["volumeMounts"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert pod["terminationGracePeriodSeconds"] > 10
    meta = deployment["spec"]["template"]["metadata"]
    assert meta["labels"][NAME] == "corral-worker" and meta["labels"][ROLE_LABEL] == "both"
    assert meta["labels"][MODEL_LABEL] == "llama-3.1-8b" and meta["annotations"][MODEL_NAME_ANNOTATION] == "llama-3.1-8b"


def test_medium_gets_kv_events_lmcache_redis_and_an_embedding_model_without_lmcache():
    config = example("medium")
    rendering = render(config, "eks")
    big = one(rendering, "Deployment", "vllm-llama-3-1-70b")
    container = _container(big)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert {"name": "kv-events", "containerPort": 5557, "protocol": "TCP"} in container["ports"]
    lmcache = one(rendering, "ConfigMap", "vllm-llama-3-1-70b-lmcache")["data"]["lmcache.yaml"]
    assert lmcache == vllm_launch(config, config.models[0], redis_url=REDIS_URL).lmcache_config
    assert yaml.safe_load(lmcache)["remote_url"] == REDIS_URL
    assert {"name": "LMCACHE_CONFIG_FILE", "value": "/etc/corral/lmcache.yaml"} in container["env"]
    embed = _container(one(rendering, "Deployment", "vllm-bge-m3"))
    assert "--runner" in embed["command"] and "--kv-transfer-config" not in embed["command"]
    assert not find(rendering, "ConfigMap", "vllm-bge-m3-lmcache")
    assert one(rendering, "Deployment", "corral-redis")["spec"]["replicas"] == 1
    assert one(rendering, "Service", "corral-redis")["spec"]["ports"][0]["port"] == 6379
    assert one(rendering, "Ingress", "corral-router")["spec"]["ingressClassName"] == "alb"


def test_large_is_two_leader_worker_sets_with_ray_one_per_role():
    config = example("large")
    rendering = render(config, "eks")
    sets = {s["metadata"]["name"]: s for s in find(rendering, "LeaderWorkerSet")}
    assert set(sets) == {"vllm-deepseek-r1-prefill", "vllm-deepseek-r1-decode"}
    assert not find(rendering, "Deployment", "vllm-deepseek-r1-prefill")
    for role, lws in (("prefill", sets["vllm-deepseek-r1-prefill"]), ("decode", sets["vllm-deepseek-r1-decode"])):
        template = lws["spec"]["leaderWorkerTemplate"]
        assert template["size"] == 2
        leader, worker = template["leaderTemplate"], template["workerTemplate"]
        assert leader["metadata"]["labels"][NAME] == "corral-worker"
        assert worker["metadata"]["labels"][NAME] == "corral-ray-worker"  # discovery must not route to them
        assert leader["metadata"]["labels"][ROLE_LABEL] == role
        script = leader["spec"]["containers"][0]["command"][2]
        assert "ray start --head" in script and script.rstrip().endswith("--distributed-executor-backend ray")
        assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in script
        assert f'"kv_role":"kv_{"producer" if role == "prefill" else "consumer"}"' in script
        assert "$LWS_LEADER_ADDRESS:6379" in worker["spec"]["containers"][0]["command"][2]
        assert leader["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "8"}
        assert "ports" not in worker["spec"]["containers"][0]
    scaled = one(rendering, "ScaledObject", "vllm-deepseek-r1-decode")
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"


def test_queue_autoscaler_reads_the_workloads_waiting_requests():
    rendering = render(example("small"), "eks")
    scaled = one(rendering, "ScaledObject", "vllm-llama-3-1-8b")
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 3)
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "5"
    assert trigger["metadata"]["query"] == (
        'sum(vllm:num_requests_waiting{namespace="corral",corral_dev_model="llama-3.1-8b",corral_dev_role="both"})'
    )
    assert "replicas" not in one(rendering, "Deployment", "vllm-llama-3-1-8b")["spec"]
    monitor = one(rendering, "ServiceMonitor", "corral-workers")
    assert monitor["spec"]["podTargetLabels"] == [MODEL_LABEL, ROLE_LABEL]


def test_without_autoscaling_or_monitoring():
    rendering = render(stack(vllm_model(replicas=2), deploy={"autoscaling": False, "monitoring": False}), "onprem")
    assert one(rendering, "Deployment", "vllm-llama-3-1-8b")["spec"]["replicas"] == 2
    assert not find(rendering, "ScaledObject") and not find(rendering, "ServiceMonitor")
    assert not [c for c in rendering.components if "monitoring" in c.path or "dashboards" in c.path]


def test_monitoring_reuses_the_observability_rules_and_dashboards():
    rendering = render(example("small"), "onprem")
    assert one(rendering, "PrometheusRule", "corral")["spec"] == alert_rules()
    boards = one(rendering, "ConfigMap", "corral-dashboards")
    assert boards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {name: json.loads(text) for name, text in boards["data"].items()} == dashboards()


def test_redis_only_when_needed_and_not_given():
    assert not find(render(stack(), "onprem"), "Deployment", "corral-redis")
    given = stack(vllm_model(), cache={"redis": {}}, redis={"url": "redis://my-redis.example:6379/0"})
    rendering = render(given, "onprem")
    assert not find(rendering, "Deployment", "corral-redis")
    lmcache = one(rendering, "ConfigMap", "vllm-llama-3-1-8b-lmcache")["data"]["lmcache.yaml"]
    assert "redis://my-redis.example:6379/0" in lmcache
    limits = render(stack(vllm_model(), router={"shared_limits": True}), "onprem")
    assert one(limits, "Service", "corral-redis")


def test_shared_model_cache_is_one_claim_per_model():
    rendering = render(stack(vllm_model(replicas=2), deploy={"model_cache": "shared", "storage_class": "efs"}), "eks")
    claim = one(rendering, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "efs"
    volumes = _pod(one(rendering, "Deployment", "vllm-llama-3-1-8b"))["volumes"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in volumes
    addons = [a["name"] for a in one(rendering, "ClusterConfig")["addons"]]
    assert "aws-efs-csi-driver" in addons


def test_worker_api_key_comes_from_a_secret():
    rendering = render(stack(deploy={"worker_api_key_secret": "vllm-key"}), "onprem")
    env = _container(one(rendering, "Deployment", "vllm-llama-3-1-8b"))["env"]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-key", "key": "api-key",
                                                                   "optional": False}}} in env  # fmt: skip
    assert not any("vllm-key" in arg for arg in _container(one(rendering, "Deployment", "vllm-llama-3-1-8b"))["command"])


def test_ingress_with_host_and_tls():
    rendering = render(stack(deploy={"ingress_host": "llm.example.com", "ingress_tls_secret": "llm-tls"}), "onprem")
    spec = one(rendering, "Ingress")["spec"]
    assert spec["tls"] == [{"hosts": ["llm.example.com"], "secretName": "llm-tls"}]
    assert spec["rules"][0]["host"] == "llm.example.com" and "ingressClassName" not in spec
    assert not find(render(stack(), "onprem"), "Ingress")


def test_eksctl_node_groups_hold_the_replicas():
    rendering = render(example("medium"), "eks")
    cluster = one(rendering, "ClusterConfig")
    assert cluster["metadata"] == {"name": "corral-medium", "region": "us-east-1", "version": "1.33"}
    groups = {g["name"]: g for g in cluster["managedNodeGroups"]}
    assert set(groups) == {"system", "gpu-p5-48xlarge", "gpu-g6-xlarge"}
    p5 = groups["gpu-p5-48xlarge"]
    assert (p5["minSize"], p5["desiredCapacity"], p5["maxSize"]) == (1, 1, 2)  # 2 (up to 4) replicas of 4 GPUs
    assert p5["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert p5["labels"]["corral.dev/gpu"] == "h100" and "efaEnabled" not in p5
    large = {g["name"]: g for g in one(render(example("large"), "eks"), "ClusterConfig")["managedNodeGroups"]}
    assert large["gpu-p5-48xlarge"]["efaEnabled"] is True
    assert (large["gpu-p5-48xlarge"]["minSize"], large["gpu-p5-48xlarge"]["maxSize"]) == (4, 8)


def test_multi_node_on_eks_needs_a_zone():
    config = example("large")
    config = config.model_copy(update={"deploy": config.deploy.model_copy(update={"eks_gpu_zone": None})})
    with pytest.raises(ConfigError, match=r"deploy.eks_gpu_zone: replicas on p5.48xlarge span nodes"):
        render(config, "eks")
    render(config, "onprem")  # no EFA node groups to place there


@pytest.mark.parametrize(("models", "message"), [
    ([{"name": "tiny", "task": "chat", "engine": "llamacpp", "source": "smollm2-135m-instruct"}],
     "models (tiny).engine: `corral deploy` runs vLLM workers on GPUs; 'llamacpp' models run under `corral up`"),
    ([vllm_model("org/m"), vllm_model("org-m")], "models (org-m).name: becomes 'org-m' in Kubernetes, as model 'org/m'"),
    ([vllm_model(), vllm_model("remote", replicas=0, endpoints=["http://vllm.example:8000"], gpu=None)],
     "models (remote).replicas: 0, but the in-cluster router finds workers by watching its pods only"),
])  # fmt: skip
def test_stacks_that_cannot_be_deployed_name_the_field(models, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        render(stack(*models), "onprem")


def test_rendering_is_deterministic():
    assert render(example("large"), "eks").files() == render(example("large"), "eks").files()


def test_write_replaces_an_earlier_render_and_leaves_other_files(tmp_path):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "30-09-removed-model.yaml").write_text("old\n")
    (tmp_path / "notes.md").write_text("mine\n")
    paths = write(render(example("small"), "onprem"), tmp_path)
    assert not (tmp_path / "manifests" / "30-09-removed-model.yaml").exists()
    assert (tmp_path / "notes.md").read_text() == "mine\n"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == sorted(
        p.relative_to(tmp_path).as_posix() for p in (tmp_path / "manifests").glob("*.yaml"))
    for path in paths:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents and all("apiVersion" in d for d in documents)
