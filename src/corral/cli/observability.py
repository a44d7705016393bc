"""`corral observability [STACK] --out DIR`: Prometheus, alert and Grafana files for your own monitoring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from corral.cli.common import StackArg, load_or_exit
from corral.observability.prometheus import write_observability_files


def observability(
    stack: StackArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the files to.")] = Path("observability"),
) -> None:
    """Write prometheus.yml (scraping the stack's router and endpoints), alert rules and Grafana dashboards."""
    config = load_or_exit(stack)
    files = write_observability_files(config, out, interval_s=config.observability.scrape_interval_s)
    console = Console()
    for path in files:
        console.print(str(path))
