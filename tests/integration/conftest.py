"""Real stacks on 127.0.0.1: `corral up` as a child process, driven by the openai client."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.supervisor.layout import free_port


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    base_url: str
    run_dir: Path
    log_path: Path

    def children(self) -> dict[int, str]:
        """pid -> command line of every live process whose parent is the supervisor."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                found[int(entry.name)] = cmdline
        return found

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(url: str, timeout_s: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"corral up exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"stack not ready after {timeout_s} s:\n{log.read_text()}")


def start_stack(stack_file: Path | None, tmp_path: Path) -> RunningStack:
    port = free_port()
    run_dir = tmp_path / "run"
    log_path = tmp_path / "up.log"
    argv = [sys.executable, "-m", "corral", "up", "--port", str(port), "--run-dir", str(run_dir)]
    if stack_file is not None:
        argv.insert(4, str(stack_file))
    env = {**os.environ, "COLUMNS": "120"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/ready", 300, process, log_path)
    return RunningStack(process, base, run_dir, log_path)


def stop_stack(stack: RunningStack, timeout_s: float = 60) -> int:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGINT)
        try:
            stack.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            stack.process.kill()
            stack.process.wait(10)
    return stack.process.returncode


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The built-in default stack (SmolLM2 x2, Gemma, MiniLM) on a free port."""
    stack = start_stack(None, tmp_path_factory.mktemp("default-stack"))
    try:
        yield stack
    finally:
        stop_stack(stack)


@contextlib.contextmanager
def stack_from_text(tmp_path_factory: pytest.TempPathFactory, name: str, text: str) -> Iterator[RunningStack]:
    """`corral up` of the stack file ``text`` on a free port, stopped afterwards."""
    tmp = tmp_path_factory.mktemp(name)
    stack_file = tmp / "stack.yaml"
    stack_file.write_text(text)
    running = start_stack(stack_file, tmp)
    try:
        yield running
    finally:
        stop_stack(running)

