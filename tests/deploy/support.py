"""Stacks for the deploy tests: the three examples, and small stacks built in code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.config import StackConfig, load_stack, parse_stack
from corral.deploy.objects import Object
from corral.deploy.render import Rendering

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = ("small", "medium", "large")


def example(name: str) -> StackConfig:
    return load_stack(REPO / "examples" / f"deploy-{name}.yaml")


def vllm_model(name: str = "llama-3.1-8b", **fields: Any) -> dict[str, Any]:
    """A vLLM model entry on one L40S (a g6e.xlarge), overridable field by field."""
    entry: dict[str, Any] = {
        "name": name, "task": "chat", "engine": "vllm", "source": "meta-llama/Llama-3.1-8B-Instruct",
        "replicas": 1, "gpu": {"type": "l40s", "count": 1, "instance": "g6e.xlarge"},
    }  # fmt: skip
    entry.update(fields)
    return entry


def stack(*models: dict[str, Any], **sections: Any) -> StackConfig:
    return parse_stack({"models": list(models) or [vllm_model()], **sections})


def find(rendering: Rendering, kind: str, name: str | None = None) -> list[Object]:
    return [
        item for item in rendering.objects()
        if item["kind"] == kind and (name is None or item["metadata"]["name"] == name)
    ]  # fmt: skip


def one(rendering: Rendering, kind: str, name: str | None = None) -> Object:
    found = find(rendering, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]
