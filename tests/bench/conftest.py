"""Fixtures of the bench tests: the scripted fake engine as a real process on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")

StartEngine = Callable[..., str]


@pytest.fixture
def start_engine() -> Iterator[StartEngine]:
    """``start_engine(ttft_ms=40, itl_ms=10, ...)`` -> base URL; stopped after the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(**options: object) -> str:
        args = [sys.executable, str(FAKE_ENGINE)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value not in (False, None):
                args += [flag, str(value)]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PORT "), f"fake engine did not start: {line!r}"
        return f"http://127.0.0.1:{line.split()[1]}"

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
