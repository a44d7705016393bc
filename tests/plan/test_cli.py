"""`corral plan` through typer's CliRunner: the table, --json, --emit, --scenario, --local, errors."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from corral.cli.main import app
from corral.config import load_stack

runner = CliRunner()


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_table_with_reasons():
    result = runner.invoke(app, ["plan", "--model", "llama-3.1-8b", "--context", "8k", "--concurrency", "32",
                                 "--quant", "fp8"])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    for column in ("instance", "GPUs", "TP", "replicas", "fits", "headroom", "out tok/s", "$/month", "$/1M tok"):
        assert column in out
    assert "g6.xlarge" in out and "3x L4 24GB" in out and "$1,763" in out
    assert "why g6.xlarge (TP=1, 3 replica(s))" in out
    assert "KV cache: 128 KiB per token over all 32 layers (GQA)" in out


def test_json():
    result = runner.invoke(app, ["plan", "-m", "llama-3.1-8b", "--context", "8k", "--concurrency", "32",
                                 "--quant", "fp8", "--target-tpm", "200000", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"]["kv_bytes_per_token"] == 131072
    assert data["workload"]["target_tpm"] == 200000
    assert data["top"]["instance"] == data["options"][0]["instance"]
    assert data["options"][0]["fits"] is True and data["reasons"]
    assert data["sources"]["model"][0]["ref"]
    assert set(data["sources"]["instances"]) >= {"g6.xlarge", "p5.48xlarge"}


def test_emit_writes_a_stack_corral_loads(tmp_path):
    path = tmp_path / "stack.yaml"
    result = runner.invoke(app, ["plan", "-m", "llama-3.1-70b", "--context", "32k", "--concurrency", "8", "--quant",
                                 "fp8", "--gpu", "l40s", "--tpot-ms", "100", "--emit", str(path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in _flat(result.output)
    stack = load_stack(path)
    model = stack.models[0]
    assert (model.name, model.engine, model.task) == ("llama-3.1-70b", "vllm", "chat")
    assert model.source == "meta-llama/Llama-3.1-70B-Instruct"
    assert model.context_length == 32768 and model.replicas == 1
    assert model.vllm.tensor_parallel_size == 4 and model.vllm.quantization == "fp8"
    assert model.vllm.max_num_seqs >= 1 and model.vllm.gpu_memory_utilization == 0.9
    assert (model.gpu.type, model.gpu.count, model.gpu.instance) == ("l40s", 4, "g6e.12xlarge")
    assert path.read_text().startswith("# corral stack file written by `corral plan`")
    listed = runner.invoke(app, ["models", str(path)])
    assert listed.exit_code == 0 and "vllm" in listed.output


def test_emit_native_formats_need_no_quantization_flag(tmp_path):
    path = tmp_path / "oss.yaml"
    result = runner.invoke(app, ["plan", "-m", "gpt-oss-120b", "--context", "64k", "--emit", str(path), "--json"])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(path.read_text())
    assert document["models"][0]["vllm"]["quantization"] is None
    assert load_stack(path).models[0].gpu.count == load_stack(path).models[0].vllm.tensor_parallel_size


@pytest.mark.parametrize("name", ["small", "medium", "large"])
def test_scenarios(name):
    result = runner.invoke(app, ["plan", "--scenario", name])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert f"scenario {name}:" in out and "against the seed's figure" in out and "seed:" in out


def test_scenario_json():
    result = runner.invoke(app, ["plan", "--scenario", "small", "--json"])
    data = json.loads(result.output)
    assert data["seed"]["monthly_usd"] == [400, 600]
    assert len(data["plans"]) == 4 and data["gap"]


def test_local():
    result = runner.invoke(app, ["plan", "--local", "--context", "2k"])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert "this machine:" in out and "smollm2-135m-instruct" in out and "minilm-l6-v2" in out
    data = json.loads(runner.invoke(app, ["plan", "--local", "--json"]).output)
    assert data["machine"]["cpus"] >= 1 and len(data["shipped"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "--model: unknown model 'nope'; choose one of: llama-3.1-8b,"),
        (["--model", "llama-3.1-8b", "--context", "8q"], "--context: '8q' is not a token count (e.g. 8192, 8k, 128k)"),
        (["--model", "qwen2.5-7b", "--context", "64k"], "--context: 65,536 tokens exceeds qwen2.5-7b's maximum"),
        (["--model", "llama-3.1-8b", "--quant", "q4_k_m"], "--quant: 'q4_k_m' is not a weight format vLLM serves; "
                                                           "choose one of: native, bf16"),
        (["--model", "llama-3.1-8b", "--gpu", "rtx4090"], "--gpu: unknown GPU 'rtx4090'; choose one of: a10g"),
        (["--model", "llama-3.1-8b", "--kv-dtype", "fp4"], "--kv-dtype: unknown 'fp4'"),
        (["--model", "llama-3.1-8b", "--kv-dtype", "fp8_ds_mla"], "--kv-dtype: fp8_ds_mla is for MLA models"),
        (["--model", "llama-3.1-8b", "--pricing", "cheap"], "--pricing: unknown 'cheap'; choose one of: on-demand,"),
        (["--model", "llama-3.1-8b", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization: 1.5 must be"),
        (["--model", "llama-3.1-8b", "--context", "4k", "--input-tokens", "4k"], "--input-tokens/--output-tokens:"),
        (["--model", "llama-3.1-8b", "--target-tpm", "0"], "--target-tpm: 0 must be > 0"),
        (["--scenario", "huge"], "--scenario: unknown scenario 'huge'; choose one of: small, medium, large"),
        ([], "--model: give one of --model NAME, --scenario small|medium|large or --local"),
        (["--model", "llama-3.1-8b", "--local"], "(got --model and --local)"),
        (["--scenario", "small", "--emit", "x.yaml"], "--emit: needs --model"),
        (["--model", "deepseek-r1", "--gpu", "l4", "--emit", "x.yaml"], "--emit: no option fits"),
        (["--model", "llama-3.1-8b", "--concurrency", "0"], "--concurrency"),
    ],
)
def test_bad_input_names_the_option(args, message):
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output), result.output


def test_the_example_planned_stack_loads():
    from pathlib import Path

    stack = load_stack(Path(__file__).resolve().parents[2] / "examples" / "planned-llama-3.1-8b.yaml")
    assert stack.models[0].engine == "vllm" and stack.models[0].gpu.instance == "g6e.xlarge"
