"""Kubernetes objects as plain dicts, and the files they are written to.

An object is the dict ``kubectl apply`` reads (``apiVersion``, ``kind``, ``metadata``,
...); a :class:`Component` is one file of them. Builders elsewhere in this package are
pure functions from the stack to components, so tests can inspect them without YAML.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml

Object = dict[str, Any]


class Component(NamedTuple):
    """One output file (``path`` relative to the output directory) and its objects, in order."""

    path: str
    objects: tuple[Object, ...]


def metadata(
    name: str,
    namespace: str | None,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> Object:
    """``metadata`` of an object; ``namespace`` None for cluster-scoped ones."""
    meta: Object = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def obj(api_version: str, kind: str, meta: Object, **fields: Any) -> Object:
    """``{"apiVersion", "kind", "metadata", **fields}`` in that order (the order YAML shows)."""
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML has no type stubs here
    """Multi-line strings (scripts, embedded files) as ``|`` blocks, so they read as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(objects: tuple[Object, ...] | list[Object]) -> str:
    """Objects as one YAML stream, ``---`` between them, keys in insertion order."""
    return "---\n".join(
        yaml.dump(item, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
        for item in objects
    )
