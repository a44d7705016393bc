"""`corral up` refuses a stack that asks it to start vLLM replicas (a `corral plan --emit` stack)."""

from __future__ import annotations

import pytest

from corral.config import parse_stack
from corral.errors import ConfigError
from corral.supervisor.layout import plan_stack


def _stack(**vllm_model):
    model = {"name": "llama-3.1-8b", "task": "chat", "engine": "vllm", "source": "meta-llama/Llama-3.1-8B-Instruct",
             "replicas": 3, "gpu": {"type": "l4", "count": 1}}
    model.update(vllm_model)
    return parse_stack({"models": [
        {"name": "chat", "task": "chat", "engine": "llamacpp", "source": "smollm2-135m-instruct"}, model]})


def test_vllm_replicas_are_refused_with_the_model_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        plan_stack(_stack(), tmp_path / "run", allocate_port=lambda host: 9999)
    message = str(info.value)
    assert "'llama-3.1-8b' asks for 3 vllm replica(s) on 1 x l4 each" in message
    assert "`corral up` cannot start on this machine" in message
    assert not (tmp_path / "run").exists()  # nothing written


def test_vllm_endpoints_without_replicas_still_route(tmp_path):
    stack = _stack(replicas=0, endpoints=["http://10.0.0.5:8000"])
    ports = iter(range(20000, 20010))
    layout = plan_stack(stack, tmp_path / "run", allocate_port=lambda host: next(ports))
    assert [spec.model for spec in layout.workers] == ["chat"]
    assert layout.resolved.model("llama-3.1-8b").endpoints == ("http://10.0.0.5:8000",)
