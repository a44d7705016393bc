"""`corral up` with a worker that cannot start: exit non-zero, show its last log lines, leave nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from corral.supervisor.layout import free_port

pytestmark = pytest.mark.slow


def test_a_worker_that_fails_to_start_fails_up_with_its_log(tmp_path):
    stack = tmp_path / "stack.yaml"
    stack.write_text(yaml.safe_dump({"models": [
        {"name": "embed", "task": "embedding", "engine": "onnx-embed", "source": "minilm-l6-v2"},
        {"name": "broken", "task": "chat", "engine": "llamacpp", "source": str(tmp_path / "missing.gguf")},
    ]}))
    result = subprocess.run(
        [sys.executable, "-m", "corral", "up", str(stack), "--port", str(free_port()),
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "corral up failed: broken-0: exited with code" in output
    assert "missing.gguf" in output  # the worker's own error, from its log tail
    assert "corral stopped." in output  # the healthy embedding worker was stopped too
