"""Names and labels of what `corral deploy render` creates, shared with the router's
Kubernetes discovery, which finds the worker pods by these labels.

A worker pod that serves HTTP carries ``app.kubernetes.io/name=corral-worker``,
``corral.dev/model=<label value of the model name>`` and ``corral.dev/role=both|prefill|decode``,
and the model's real name in the annotation ``corral.dev/model-name`` (a model name such
as ``meta-llama/Llama-3.1-8B`` is not a label value). Ray worker pods of a multi-node
replica are ``corral-ray-worker``: they serve nothing, so discovery must not see them.
"""

from __future__ import annotations

import hashlib
import re

PART_OF = "app.kubernetes.io/part-of"
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
MODEL_LABEL = "corral.dev/model"
ROLE_LABEL = "corral.dev/role"
MODEL_NAME_ANNOTATION = "corral.dev/model-name"
STACK_DIGEST_ANNOTATION = "corral.dev/stack-sha256"

ROUTER = "corral-router"
WORKER = "corral-worker"
RAY_WORKER = "corral-ray-worker"
REDIS = "corral-redis"
WORKERS_SERVICE = "corral-workers"

_INVALID_VALUE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_INVALID_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_MAX = 63


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _shorten(value: str, limit: int, original: str) -> str:
    """``value`` cut to ``limit`` characters, ending in a digest of ``original`` when cut."""
    if len(value) <= limit:
        return value
    head = value[: limit - 9].rstrip("-._")
    return f"{head}-{_digest(original)}"


def label_value(name: str) -> str:
    """A Kubernetes label value for ``name``: characters outside ``[A-Za-z0-9._-]`` become
    ``-``, it starts and ends alphanumeric, at most 63 characters (a long name ends in a
    digest of the whole). Different names can map to one value; the renderer checks."""
    value = _INVALID_VALUE_CHARS.sub("-", name).strip("-._")
    return _shorten(value, _MAX, name).strip("-._") or _digest(name)


def resource_name(*parts: str, limit: int = _MAX) -> str:
    """A DNS-1123 label (lower case, digits, ``-``; at most ``limit``) from ``parts``,
    e.g. ``resource_name("vllm", "meta-llama/Llama-3.1-8B", "decode")`` ->
    ``vllm-meta-llama-llama-3-1-8b-decode``."""
    joined = "-".join(parts)
    value = _INVALID_NAME_CHARS.sub("-", joined.lower()).strip("-")
    value = re.sub(r"-{2,}", "-", value)
    return _shorten(value, limit, joined).strip("-") or "x" + _digest(joined)


def common_labels(component: str) -> dict[str, str]:
    """Labels on every object corral renders: ``component`` is router, worker, redis, ..."""
    return {PART_OF: "corral", COMPONENT: component, MANAGED_BY: "corral-deploy"}
