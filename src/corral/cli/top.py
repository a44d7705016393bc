"""`corral top`: a live terminal view of a running stack, from the router's /metrics."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from corral.cli.common import fail
from corral.observability.top import Samples, model_rows, parse_samples, render_rows


def _scrape(url: str) -> Samples:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            return parse_samples(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        fail(f"--url: cannot read {url}/metrics: {exc}")


def top(
    url: Annotated[str, typer.Option(help="The router's base URL.")] = "http://127.0.0.1:8000",
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option(help="Print one frame (two scrapes, one interval apart) and exit.")] = False,
) -> None:
    """Per model: requests/s, in-flight, TTFT p50/p99, tokens/s, cache hit rate, healthy endpoints."""
    base = url.rstrip("/")
    console = Console()
    before = _scrape(base)
    if once:
        time.sleep(interval)
        console.print(render_rows(model_rows(before, _scrape(base), interval), base, interval))
        return
    with Live(console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                after = _scrape(base)
                live.update(render_rows(model_rows(before, after, interval), base, interval), refresh=True)
                before = after
        except KeyboardInterrupt:
            pass
