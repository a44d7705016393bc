"""`corral up`: start the workers, then the router; restart crashes; drain and stop on a signal.

Services the workers need (redis-server, when the stack uses Redis without a URL) start
first and stop last; their readiness is a Redis PING rather than an HTTP probe.

The shape follows uvicorn's multiprocess supervisor: signal handlers only enqueue the
signal; one loop polls the children, dispatches signals and restarts crashed children
with exponential backoff. Stopping is ordered: the router first (it stops accepting and
drains in-flight requests), then the workers (each drains its own queue), then SIGKILL
for anything still alive after ``stop_timeout_s``.
"""

from __future__ import annotations

import logging
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import redis
from rich.console import Console
from rich.live import Live

from corral.config import StackConfig
from corral.supervisor.layout import StackLayout, plan_stack
from corral.supervisor.process import ManagedProcess, ProcessState, probe
from corral.supervisor.render import render_banner, render_processes

logger = logging.getLogger(__name__)

#: A child that stayed ready this long has its crash count (and so its backoff) reset.
STABLE_AFTER_S = 30.0
TICK_S = 0.2


class StartupError(Exception):
    """A child exited or timed out before the stack became ready."""

    def __init__(self, process: ManagedProcess, reason: str) -> None:
        super().__init__(f"{process.spec.name}: {reason}")
        self.process = process
        self.reason = reason


class Supervisor:
    """Owns the stack's child processes from start to stop."""

    def __init__(
        self,
        stack: StackConfig,
        *,
        console: Console,
        run_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = stack.supervisor
        self._console = console
        self._clock = clock
        self._sleep = sleep
        self.layout: StackLayout = plan_stack(stack, run_dir or Path(stack.supervisor.run_dir))
        self.workers = [ManagedProcess(spec) for spec in self.layout.workers]
        self.router = ManagedProcess(self.layout.router)
        self.extras = [ManagedProcess(spec) for spec in self.layout.extras]
        self.services = [ManagedProcess(spec) for spec in self.layout.services]
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    @property
    def processes(self) -> list[ManagedProcess]:
        return [*self.services, *self.workers, self.router, *self.extras]

    def run(self) -> int:
        """Run until a signal; the exit code for the CLI."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self._start_all()
            except StartupError as exc:
                self._report_startup_failure(exc)
                return 1
            if self._interrupted():
                return 0
            self._console.print()
            self._console.print(render_banner(self.layout.resolved, self.layout.extras))
            self._watch()
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.put(signum)

    def _interrupted(self) -> bool:
        return not self._signals.empty()

    # -- startup ---------------------------------------------------------------------------

    def _start_all(self) -> None:
        with Live(render_processes(self.processes, self._clock()), console=self._console,
                  auto_refresh=False, transient=False) as live:
            for process in self.services:
                process.start(self._clock())
            self._wait_ready(self.services, live)
            if self._interrupted():
                return
            for process in self.workers:
                process.start(self._clock())
            self._wait_ready(self.workers, live)
            if self._interrupted():
                return
            self.router.start(self._clock())
            self._wait_ready([self.router], live)
            for process in self.extras:
                process.start(self._clock())
            self._wait_ready(self.extras, live)

    def _wait_ready(self, group: list[ManagedProcess], live: Live) -> None:
        deadline = self._clock() + self._config.startup_timeout_s
        while not self._interrupted():
            now = self._clock()
            for process in group:
                if process.state is ProcessState.STARTING:
                    self._advance_startup(process, now, deadline)
            live.update(render_processes(self.processes, now), refresh=True)
            if all(p.state is ProcessState.READY for p in group):
                return
            self._sleep(TICK_S)

    def _advance_startup(self, process: ManagedProcess, now: float, deadline: float) -> None:
        code = process.poll()
        if code is not None:
            process.finished()
            raise StartupError(process, f"exited with code {code} while starting")
        if is_ready(process):
            process.state = ProcessState.READY
            process.ready_at = now
        elif now > deadline:
            raise StartupError(process, f"not ready after {self._config.startup_timeout_s:.0f} s")

    def _report_startup_failure(self, exc: StartupError) -> None:
        self._console.print(f"[bold red]corral up failed:[/] {exc}")
        tail = exc.process.log_tail(20)
        if tail:
            self._console.print(f"[dim]last lines of {exc.process.spec.log_path}:[/]")
            self._console.print("".join(tail).rstrip(), markup=False, highlight=False)

    # -- steady state ----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._interrupted():
            now = self._clock()
            for process in self.processes:
                self._tend(process, now)
            self._sleep(TICK_S)

    def _tend(self, process: ManagedProcess, now: float) -> None:
        """One step of a child's life after startup: notice crashes, restart, mark ready."""
        if process.state in (ProcessState.STARTING, ProcessState.READY):
            code = process.poll()
            if code is not None:
                self._schedule_restart(process, code, now)
            elif process.state is ProcessState.STARTING and is_ready(process):
                process.state = ProcessState.READY
                process.ready_at = now
                self._console.print(f"[green]{process.spec.name} is ready again[/] (pid {process.pid})")
            elif process.ready_at is not None and now - process.ready_at > STABLE_AFTER_S:
                process.failures = 0
        elif process.state is ProcessState.BACKOFF and now >= process.restart_at:
            process.restarts += 1
            process.start(now)
            self._console.print(f"restarting {process.spec.name} (restart #{process.restarts}, pid {process.pid})")

    def _schedule_restart(self, process: ManagedProcess, code: int, now: float) -> None:
        delay = min(self._config.restart_backoff_s * 2**process.failures, self._config.restart_backoff_max_s)
        process.failures += 1
        process.state = ProcessState.BACKOFF
        process.restart_at = now + delay
        self._console.print(
            f"[yellow]{process.spec.name} exited with code {code}[/]; "
            f"restarting in {delay:.1f} s (the router skips it meanwhile)"
        )

    # -- shutdown --------------------------------------------------------------------------

    def stop(self) -> None:
        """Drain and stop: router first, then workers; SIGKILL whatever outlives the timeout."""
        alive = [p for p in self.processes if p.poll() is None and p.pid is not None]
        if not alive:
            return
        self._console.print("stopping: draining in-flight requests ...")
        for group in ([self.router], self.workers, self.extras, self.services):
            self._stop_group([p for p in group if p in alive])
        self._console.print("corral stopped.")

    def _stop_group(self, group: list[ManagedProcess]) -> None:
        for process in group:
            process.state = ProcessState.STOPPING
            process.signal(signal.SIGTERM)
        deadline = self._clock() + self._config.stop_timeout_s
        pending_signals = self._signals.qsize()
        while any(p.poll() is None for p in group) and self._clock() < deadline:
            if self._signals.qsize() > pending_signals:
                self._console.print("[red]second signal: killing without waiting[/]")
                break
            self._sleep(0.05)
        for process in group:
            if process.poll() is None:
                logger.warning("%s did not stop in time; killing it", process.spec.name)
                process.kill()
            process.finished()


def is_ready(process: ManagedProcess) -> bool:
    """An HTTP health probe, or a PING for redis-server (its ready_url is redis://)."""
    url = process.spec.ready_url
    if process.spec.kind != "redis":
        return probe(url)
    try:
        with redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False
