"""Where a model's pods go: GPUs per pod, pods per replica, node selectors per target."""

from __future__ import annotations

import re

import pytest
from tests.deploy.support import stack, vllm_model

from corral.deploy.placement import INSTANCE_TYPE_LABEL, placement
from corral.errors import ConfigError


def _big(count: int = 16, instance: str | None = "p5.48xlarge", **vllm: int) -> dict[str, object]:
    parallel = vllm or {"tensor_parallel_size": 8, "pipeline_parallel_size": count // 8}
    return vllm_model("big", gpu={"type": "h100", "count": count, "instance": instance}, vllm=parallel)


def test_eks_selects_the_instance_type_and_tolerates_the_gpu_taint():
    config = stack()
    where = placement(config, config.models[0], "eks")
    assert (where.gpus_per_pod, where.pods_per_replica, where.node_gpus) == (1, 1, 1)
    assert where.node_selector == {INSTANCE_TYPE_LABEL: "g6e.xlarge"}
    assert where.tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert not where.multi_node


def test_a_replica_larger_than_a_node_spans_nodes():
    config = stack(_big())
    where = placement(config, config.models[0], "eks")
    assert (where.gpus_per_pod, where.pods_per_replica) == (8, 2) and where.multi_node
    assert where.nodes_for(2) == 4


def test_small_pods_pack_onto_a_node():
    config = stack(_big(4, tensor_parallel_size=4))
    where = placement(config, config.models[0], "eks")
    assert (where.gpus_per_pod, where.pods_per_replica) == (4, 1)
    assert [where.nodes_for(n) for n in (1, 2, 3)] == [1, 1, 2]


def test_onprem_selects_by_the_gpu_label_and_its_mapped_value():
    config = stack(_big(instance=None), deploy={
        "gpu_node_label": "nvidia.com/gpu.product", "gpu_label_values": {"h100": "NVIDIA-H100-80GB-HBM3"},
        "gpu_node_selector": {"pool": "inference"}, "gpus_per_node": 4,
    })  # fmt: skip
    where = placement(config, config.models[0], "onprem")
    assert where.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "inference"}
    assert (where.gpus_per_pod, where.pods_per_replica, where.instance) == (4, 4, None)


def test_onprem_default_label_is_the_gpu_type():
    config = stack()
    assert placement(config, config.models[0], "onprem").node_selector == {"corral.dev/gpu": "l40s"}


@pytest.mark.parametrize(("model", "target", "deploy", "message"), [
    (_big(instance=None), "eks", {}, "models (big).gpu.instance: --target eks needs the instance type"),
    (_big(instance="p9.huge"), "eks", {}, "'p9.huge' is not in corral's AWS catalog"),
    (_big(instance="g6e.48xlarge"), "eks", {}, "instance g6e.48xlarge has l40s GPUs, not h100"),
    (_big(instance=None), "onprem", {"gpus_per_node": 6}, "16 GPUs per replica span nodes of 6 GPUs "
                                                          "(deploy.gpus_per_node) unevenly"),
])  # fmt: skip
def test_what_cannot_be_placed_names_the_field(model, target, deploy, message):
    config = stack(model, deploy=deploy)
    with pytest.raises(ConfigError, match=re.escape(message)):
        placement(config, config.models[0], target)
