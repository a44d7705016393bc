"""The stack file's vLLM deployment fields (written by `corral plan --emit`)."""

from __future__ import annotations

import pytest

from corral.config import dump_stack, parse_stack
from corral.errors import ConfigError


def _vllm_model(**overrides):
    model = {
        "name": "llama", "task": "chat", "engine": "vllm", "source": "meta-llama/Llama-3.1-8B-Instruct",
        "replicas": 2, "context_length": 8192,
        "vllm": {"tensor_parallel_size": 2, "quantization": "fp8", "kv_cache_dtype": "fp8", "max_num_seqs": 64},
        "gpu": {"type": "l40s", "count": 2, "instance": "g6e.12xlarge"},
    }
    model.update(overrides)
    return model


def test_a_planned_vllm_model_with_replicas_validates():
    stack = parse_stack({"models": [_vllm_model()]})
    model = stack.models[0]
    assert model.replicas == 2 and model.vllm.tensor_parallel_size == 2 and model.vllm.pipeline_parallel_size == 1
    assert model.vllm.gpu_memory_utilization == 0.9 and model.vllm.enable_prefix_caching is True
    assert model.gpu.count == 2 and model.gpu.instance == "g6e.12xlarge"
    assert parse_stack(__import__("yaml").safe_load(dump_stack(stack))) == stack


def test_fields_are_optional_and_frozen():
    stack = parse_stack({"models": [_vllm_model(replicas=0, endpoints=["http://10.0.0.5:8000"], vllm=None,
                                                gpu=None)]})
    assert stack.models[0].vllm is None and stack.models[0].gpu is None
    with pytest.raises(Exception, match="frozen"):
        parse_stack({"models": [_vllm_model()]}).models[0].vllm.tensor_parallel_size = 4


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (_vllm_model(gpu=None), "engine 'vllm' is not started by corral on this machine; set replicas: 0 and list "
                                "its endpoints, or give gpu: (type, count) for `corral deploy`"),
        (_vllm_model(gpu={"type": "l40s", "count": 4}), "gpu.count (4) must equal vllm.tensor_parallel_size x "
                                                        "pipeline_parallel_size (2 x 1 = 2)"),
        (_vllm_model(vllm={"tensor_parallel_size": 0}), "models[0] (llama).vllm.tensor_parallel_size: Input should be "
                                                        "greater than or equal to 1 (got 0)"),
        (_vllm_model(vllm={"gpu_memory_utilization": 1.5}), "models[0] (llama).vllm.gpu_memory_utilization"),
        (_vllm_model(vllm={"kv_cache_dtype": "fp4"}), "models[0] (llama).vllm.kv_cache_dtype: Input should be"),
        (_vllm_model(vllm={"quantization": "FP 8"}), "vllm.quantization: must be a vLLM quantization method name"),
        (_vllm_model(vllm={"tp": 2}), "models[0] (llama).vllm.tp: Extra inputs are not permitted"),
        (_vllm_model(gpu={"type": "H100!", "count": 2}), "models[0] (llama).gpu.type: must be a lower-case GPU name"),
        ({"name": "m", "task": "chat", "engine": "llamacpp", "source": "smollm2-135m-instruct",
          "vllm": {"tensor_parallel_size": 1}}, "vllm: applies to engine 'vllm' only (this model's engine is 'llamacpp')"),
        ({"name": "m", "task": "chat", "engine": "llamacpp", "source": "smollm2-135m-instruct",
          "gpu": {"type": "l4"}}, "gpu: applies to engine 'vllm' only"),
    ],
)
def test_bad_vllm_fields_name_the_field(model, expected):
    with pytest.raises(ConfigError) as info:
        parse_stack({"models": [model]}, origin="s.yaml")
    assert expected in str(info.value)
