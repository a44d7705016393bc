"""Snapshot tests: the rendered files of the three example stacks, per target, byte for byte.

The expected files live in ``tests/deploy/snapshots/<stack>-<target>/`` (``manifests/*.yaml``
and, for eks, ``eksctl/cluster.yaml``). A change to the renderer, to the vLLM adapter's
command line or to an example stack shows up here as a diff to review. To accept it,
regenerate the snapshots and review ``git diff tests/deploy/snapshots``::

    CORRAL_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/deploy/test_deploy_snapshots.py

``manifests/41-dashboards.yaml`` is left out of the snapshots: it is the observability
module's dashboards, checked against that module in test_deploy_render.py, and 37 kB
per snapshot of JSON would turn every dashboard edit into six snapshot diffs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.deploy.support import EXAMPLES, example

from corral.deploy.render import render

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("CORRAL_UPDATE_SNAPSHOTS") == "1"
NOT_SNAPSHOTTED = frozenset({"manifests/41-dashboards.yaml"})


def _rendered(name: str, target: str) -> dict[str, str]:
    files = render(example(name), target).files()  # type: ignore[arg-type]
    return {path: text for path, text in files.items() if path not in NOT_SNAPSHOTTED}


def _stored(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.yaml"))}


@pytest.mark.parametrize("target", ["eks", "onprem"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_files_match_the_snapshot(name: str, target: str):
    folder = SNAPSHOTS / f"{name}-{target}"
    rendered = _rendered(name, target)
    if UPDATE:
        shutil.rmtree(folder, ignore_errors=True)
        for path, text in rendered.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
    stored = _stored(folder)
    assert sorted(rendered) == sorted(stored), f"files differ from {folder} (CORRAL_UPDATE_SNAPSHOTS=1 to accept)"
    for path, text in rendered.items():
        assert text == stored[path], f"{folder / path} differs (CORRAL_UPDATE_SNAPSHOTS=1 to accept, then review)"
