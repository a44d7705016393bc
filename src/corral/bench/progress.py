"""The live view of a run: done, errors, in flight, current throughput. Redrawn 4 times a
second from the runner's counters (never per chunk)."""

from __future__ import annotations

import asyncio
import contextlib
from time import perf_counter

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from corral.bench.benchmark import LevelResult
from corral.bench.runner import RunState


class LiveProgress:
    """An :class:`~corral.bench.benchmark.Observer` drawing a rich Live view per level."""

    def __init__(self, console: Console, interval_s: float = 0.25) -> None:
        self._console = console
        self._interval_s = interval_s
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None

    def level_started(self, label: str, state: RunState) -> None:
        self._live = Live(console=self._console, auto_refresh=False, transient=True)
        self._live.start()
        self._task = asyncio.get_running_loop().create_task(self._redraw(label, state))

    def level_finished(self, level: LevelResult) -> None:
        self.close()
        m = level.metrics
        name = f"{level.label}: " if level.label else ""
        self._console.print(
            f"{name}{m.completed} completed, {m.failed} failed in {m.duration_s:.1f} s "
            f"({m.request_throughput:.2f} req/s, {m.output_throughput:.1f} output tok/s)",
            highlight=False,
        )

    def close(self) -> None:
        """Stop drawing (also after an interruption, so the terminal is left clean)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._live is not None:
            self._live.stop()
            self._live = None

    async def _redraw(self, label: str, state: RunState) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                if self._live is not None:
                    self._live.update(render(label, state, perf_counter()), refresh=True)
                await asyncio.sleep(self._interval_s)


def render(label: str, state: RunState, now: float) -> Table:
    elapsed = now - state.started_s if state.started_s is not None else 0.0
    if state.total:
        total, completed = float(state.total), float(state.done)
        of = f"{state.done}/{state.total}"
    else:
        total, completed = state.duration_s or 1.0, min(elapsed, state.duration_s or 1.0)
        of = f"{state.done} ({elapsed:.0f}/{state.duration_s or 0:.0f} s)"
    line = Text.assemble(
        (f"{label}  " if label else "", "bold"),
        f"done {of}  ",
        (f"failed {state.failed}", "red" if state.failed else ""),
        f"  in flight {state.sent - state.done}",
        f"  {state.throughput(now):.1f} req/s (last 5 s)",
        f"  {elapsed:.1f} s",
    )
    grid = Table.grid()
    grid.add_row(ProgressBar(total=total, completed=completed, width=50))
    grid.add_row(line)
    return grid
