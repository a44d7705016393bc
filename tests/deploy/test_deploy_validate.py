"""Every object of the three example stacks validates offline: Kubernetes' own schemas
(kubernetes-validate, strict, at deploy.kubernetes_version) for built-in kinds, corral's
shape checks for the custom resources and eksctl's ClusterConfig."""

from __future__ import annotations

import copy

import pytest
from tests.deploy.support import EXAMPLES, example, one

from corral.deploy.render import Rendering, render
from corral.deploy.validate import (
    CORE_GROUPS,
    CUSTOM,
    check_object,
    core_validation_available,
    validate_rendering,
)

VERSION = "1.33"


def test_kubernetes_schemas_are_installed():
    assert core_validation_available(), "kubernetes-validate is a test dependency (pyproject [test])"


@pytest.mark.parametrize("target", ["eks", "onprem"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_stacks_validate(name: str, target: str):
    config = example(name)
    assert config.deploy.kubernetes_version == VERSION
    rendering = render(config, target)  # type: ignore[arg-type]
    assert validate_rendering(rendering, VERSION) == []
    for item in rendering.objects():  # every object met a real schema or shape check
        assert item["apiVersion"] in CORE_GROUPS or (item["apiVersion"], item["kind"]) in CUSTOM


def _small() -> Rendering:
    return render(example("small"), "eks")


def test_a_bad_core_object_is_reported_with_its_path():
    deployment = copy.deepcopy(one(_small(), "Deployment", "vllm-llama-3-1-8b"))
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    [problem] = check_object(deployment, VERSION)
    assert problem.startswith("spec.template.spec.containers.0:") and "'gpus' was unexpected" in problem


def test_custom_resources_get_their_shape_checked():
    scaled = copy.deepcopy(one(_small(), "ScaledObject"))
    scaled["spec"]["minReplicaCount"] = 9
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 5
    problems = check_object(scaled, VERSION)
    assert "spec: minReplicaCount 9 must be 0..maxReplicaCount 3" in problems
    assert "spec.triggers[0].metadata.threshold: KEDA takes strings only" in problems
    monitor = copy.deepcopy(one(_small(), "ServiceMonitor", "corral-router"))
    del monitor["spec"]["endpoints"][0]["port"]
    monitor["metadata"]["name"] = "Router"
    assert check_object(monitor, VERSION) == [
        "metadata.name: 'Router' is not a DNS-1123 label", "spec.endpoints[0].port: missing",
    ]  # fmt: skip
    rule = copy.deepcopy(one(_small(), "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["expr"] = None
    assert check_object(rule, VERSION) == ["spec.groups[0].rules[0].expr: missing"]


def test_leader_worker_set_pods_get_the_core_pod_schema():
    lws = copy.deepcopy(one(render(example("large"), "eks"), "LeaderWorkerSet", "vllm-deepseek-r1-decode"))
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["resources"]["limits"] = "8"
    [problem] = check_object(lws, VERSION)
    assert problem.startswith("spec.leaderWorkerTemplate.workerTemplate.spec.containers.0.resources.limits")


def test_eksctl_sizes_and_unknown_kinds():
    cluster = copy.deepcopy(one(_small(), "ClusterConfig"))
    cluster["managedNodeGroups"][1]["minSize"] = 5
    assert check_object(cluster, VERSION) == [
        "managedNodeGroups[1]: needs minSize <= desiredCapacity <= maxSize (got [5, 1, 3])"
    ]
    unknown = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x", "namespace": "corral"}}
    assert check_object(unknown, VERSION) == ["example.com/v1 Thing: no schema known to corral"]


def test_a_kubernetes_version_without_schemas():
    [problem] = validate_rendering(_small(), "1.12")
    assert str(problem).startswith("deploy.kubernetes_version: no schemas for Kubernetes 1.12")
