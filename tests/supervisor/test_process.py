"""ManagedProcess with real child processes: logs, stop, and no orphans."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from corral.supervisor.process import ManagedProcess, ProcessSpec, ProcessState, probe


def _spec(tmp_path, code: str) -> ProcessSpec:
    return ProcessSpec(
        name="child",
        argv=(sys.executable, "-c", code),
        log_path=tmp_path / "logs" / "child.log",
        ready_url="http://127.0.0.1:9/health",
        kind="worker",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_output_goes_to_log_and_exit_code_is_seen(tmp_path):
    process = ManagedProcess(_spec(tmp_path, "print('hello from child'); raise SystemExit(3)"))
    process.start(now=0.0)
    assert process.state is ProcessState.STARTING
    assert process.wait(10)
    assert process.poll() == 3
    process.finished()
    assert process.log_tail() == ["hello from child\n"]


def test_sigterm_then_kill(tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    process = ManagedProcess(_spec(tmp_path, stubborn))
    process.start(now=0.0)
    deadline = time.monotonic() + 10
    while not process.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.signal(signal.SIGTERM)
    assert not process.wait(0.3)  # ignores SIGTERM
    process.kill()
    assert process.poll() == -signal.SIGKILL


def test_child_dies_with_its_supervisor(tmp_path):
    """SIGKILL of the supervisor must not leave its children running (PR_SET_PDEATHSIG)."""
    parent_code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from corral.supervisor.process import ManagedProcess, ProcessSpec
        spec = ProcessSpec(name="c", argv=(sys.executable, "-c", "import time; time.sleep(60)"),
                           log_path=Path({str(tmp_path)!r}) / "c.log", ready_url="http://127.0.0.1:9/", kind="worker")
        p = ManagedProcess(spec)
        p.start(0.0)
        print(p.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid)
    finally:
        parent.kill()
        parent.stdout.close()


def test_probe_of_a_closed_port_is_false():
    assert probe("http://127.0.0.1:9/health", timeout_s=0.2) is False
