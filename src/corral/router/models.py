"""The models the router serves, by every served name, and the ``/v1/models`` listing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from corral.config import ModelConfig, Task
from corral.errors import ModelNotFoundError, WrongTaskError
from corral.protocol.fields import ACCEPTING_TASKS


class ModelTable:
    """Resolves a requested name or alias to its model, checking the task it serves."""

    def __init__(self, models: Sequence[ModelConfig], *, created: int) -> None:
        self.models = tuple(models)
        self._by_name = {served: model for model in models for served in model.served_names}
        self._entries = {
            served: _entry(served, model, created) for served, model in self._by_name.items()
        }
        self.listing = orjson.dumps({"object": "list", "data": list(self._entries.values())})

    def resolve(self, name: str, task: Task, path: str) -> ModelConfig:
        """The model called ``name`` if it can answer ``task`` (requested at ``path``)."""
        model = self._by_name.get(name)
        if model is None:
            raise ModelNotFoundError(name, list(self._by_name))
        if model.task not in ACCEPTING_TASKS[task]:
            raise WrongTaskError(name, model.task, path)
        return model

    def describe(self, name: str) -> bytes:
        """``/v1/models/{name}``: one entry, or 404 naming the known ones."""
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFoundError(name, list(self._by_name))
        return orjson.dumps(entry)


def _entry(served: str, model: ModelConfig, created: int) -> dict[str, Any]:
    """OpenAI's model object; ``root`` names the model an alias points to, ``task`` what it serves."""
    return {
        "id": served,
        "object": "model",
        "created": created,
        "owned_by": "corral",
        "root": model.name,
        "task": model.task,
    }
