"""One child process of the stack: how to start it, probe it, and stop it.

Children run in their own session (a terminal's Ctrl-C reaches only the supervisor,
which then stops them in order) and get SIGKILL from the kernel if the supervisor
dies without cleaning up (PR_SET_PDEATHSIG), so no child outlives its supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


class ProcessState(enum.Enum):
    PENDING = "pending"      # not started yet
    STARTING = "starting"    # running, not ready (loading its model)
    READY = "ready"          # health check passes
    BACKOFF = "backoff"      # exited unexpectedly, waiting to restart
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ProcessSpec:
    """What to run: a name, the argv, where it logs, and the URL that says it is ready."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    ready_url: str
    kind: str  # "worker" or "router"
    model: str | None = None
    port: int = 0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os._exit(1)


def probe(url: str, timeout_s: float = 0.5) -> bool:
    """True when ``url`` answers 200 (a loopback health or readiness endpoint)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class ManagedProcess:
    """A child process with its state, restart count and log file."""

    spec: ProcessSpec
    state: ProcessState = ProcessState.PENDING
    restarts: int = 0
    failures: int = 0  # consecutive crashes, reset once it stays ready
    started_at: float = 0.0
    ready_at: float | None = None
    restart_at: float = 0.0
    last_exit: int | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self, now: float, env: dict[str, str] | None = None) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log = self.spec.log_path.open("ab")
        self._popen = subprocess.Popen(
            self.spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=env,
        )
        self.state = ProcessState.STARTING
        self.started_at = now
        self.ready_at = None

    def poll(self) -> int | None:
        """The exit code if the process has exited, else None."""
        if self._popen is None:
            return None
        code = self._popen.poll()
        if code is not None:
            self.last_exit = code
        return code

    def signal(self, signum: int) -> None:
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signum)

    def wait(self, timeout_s: float) -> bool:
        """Wait for exit; True if it exited within the timeout."""
        if self._popen is None:
            return True
        try:
            self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        self.last_exit = self._popen.returncode
        return True

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(5.0)
        self._close_log()

    def finished(self) -> None:
        self.state = ProcessState.STOPPED
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            with self.spec.log_path.open("r", encoding="utf-8", errors="replace") as handle:
                return list(deque(handle, maxlen=lines))
        except OSError:
            return []
