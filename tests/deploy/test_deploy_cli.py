"""`corral deploy render` through typer's CliRunner: files, validation, errors."""

from __future__ import annotations

import yaml
from tests.deploy.support import REPO
from typer.testing import CliRunner

from corral.cli.main import app

runner = CliRunner()
SMALL = str(REPO / "examples" / "deploy-small.yaml")


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_render_eks_writes_manifests_and_the_cluster_config(tmp_path):
    result = runner.invoke(app, ["deploy", "render", SMALL, "--target", "eks", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert "validated 20 objects against Kubernetes 1.33" in out
    assert f"eksctl create cluster -f {tmp_path}/eksctl/cluster.yaml" in out
    assert f"kubectl apply -f {tmp_path}/manifests" in out
    cluster = yaml.safe_load((tmp_path / "eksctl" / "cluster.yaml").read_text())
    assert cluster["kind"] == "ClusterConfig"
    kinds = [d["kind"] for d in yaml.safe_load_all((tmp_path / "manifests" / "10-router.yaml").read_text())]
    assert kinds[:5] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment"]


def test_render_onprem_has_no_eksctl(tmp_path):
    result = runner.invoke(app, ["deploy", "render", SMALL, "-t", "onprem", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "eksctl").exists() and (tmp_path / "manifests" / "00-namespace.yaml").exists()


def test_bad_target_and_bad_stack_exit_2(tmp_path):
    result = runner.invoke(app, ["deploy", "render", SMALL, "--target", "gke", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "--target: unknown target 'gke'; choose one of: eks, onprem" in _flat(result.output)
    stack = tmp_path / "stack.yaml"
    stack.write_text("deploy: {router_replicas: 1}\nmodels: []\n")
    result = runner.invoke(app, ["deploy", "render", str(stack), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "deploy.router_replicas: Input should be greater than or equal to 2 (got 1)" in _flat(result.output)


def test_a_stack_that_cannot_be_placed_exits_2_and_writes_nothing(tmp_path):
    stack = tmp_path / "stack.yaml"
    stack.write_text(
        "models:\n- {name: m, task: chat, engine: vllm, source: org/m, gpu: {type: h100, count: 2}}\n"
    )
    result = runner.invoke(app, ["deploy", "render", str(stack), "-t", "eks", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "models (m).gpu.instance: --target eks needs the instance type" in _flat(result.output)
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["deploy", "render", str(stack), "-t", "onprem", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output


def test_invalid_objects_fail_before_anything_is_written(tmp_path):
    stack = tmp_path / "stack.yaml"
    stack.write_text(
        "deploy: {kubernetes_version: '1.12'}\n"
        "models:\n- {name: m, task: chat, engine: vllm, source: org/m, gpu: {type: h100, count: 1}}\n"
    )
    result = runner.invoke(app, ["deploy", "render", str(stack), "-t", "onprem", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "do not validate against Kubernetes 1.12" in _flat(result.output)
    assert not (tmp_path / "out").exists()
    skipped = runner.invoke(app, ["deploy", "render", str(stack), "-t", "onprem", "-o", str(tmp_path / "out"),
                                  "--no-validate"])  # fmt: skip
    assert skipped.exit_code == 0 and (tmp_path / "out" / "manifests").is_dir()
