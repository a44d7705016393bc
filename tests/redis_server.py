"""A real ``redis-server`` on a free 127.0.0.1 port, for tests that need Redis.

    def test_x(redis_server: RedisServer) -> None:   # the pytest fixture (function scope)
        client = redis.Redis.from_url(redis_server.url)
        redis_server.stop()      # an outage: kill -9 by PID
        redis_server.start()     # back on the same port, empty

Nothing is persisted (``--save '' --appendonly no``); the working directory is the test's
``tmp_path``. The process is stopped by its PID, never by name. Tests that use it start a
real process: mark them ``@pytest.mark.slow``. Without ``redis-server`` on PATH they skip.

Use it through a fixture of your own around :func:`running_redis` (see
tests/router/test_limits_redis.py), or import the :func:`redis_server` fixture below.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.supervisor.layout import free_port

STARTUP_TIMEOUT_S = 10.0


class RedisServer:
    """One redis-server process on a fixed loopback port; restartable on that port."""

    def __init__(self, workdir: Path, port: int | None = None, *, executable: str = "redis-server") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.executable = executable
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start it (again) on :attr:`port` and wait until it accepts connections."""
        if self.running:
            return
        argv = [
            self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--daemonize", "no", "--loglevel", "warning",
        ]
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        with log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self._log_tail()}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}: {self._log_tail()}")

    def stop(self) -> None:
        """kill -9 (by PID), as an outage would; a no-op when it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)

    def _log_tail(self) -> str:
        path = self.workdir / f"redis-{self.port}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in ``workdir``, stopped on exit (skips without redis-server)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(workdir, executable=executable)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test."""
    with running_redis(tmp_path) as server:
        yield server
