"""`corral up [STACK]`: run the whole stack on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from corral.cli.common import StackArg, fail, load_or_exit, setup_logging
from corral.errors import CorralError
from corral.supervisor.supervisor import Supervisor


def up(
    stack: StackArg = None,
    port: Annotated[int | None, typer.Option(help="Router port (overrides router.port).")] = None,
    host: Annotated[str | None, typer.Option(help="Router bind address (overrides router.host).")] = None,
    prometheus: Annotated[
        bool | None, typer.Option("--prometheus/--no-prometheus", help="Start Prometheus too (observability.prometheus).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where logs and the resolved stack go (overrides supervisor.run_dir).")
    ] = None,
) -> None:
    """Start the workers, then the router; print how to call it; Ctrl-C drains and stops."""
    setup_logging("WARNING")
    config = load_or_exit(stack)
    overrides = {k: v for k, v in (("port", port), ("host", host)) if v is not None}
    if overrides:
        config = config.model_copy(update={"router": config.router.model_copy(update=overrides)})
    if prometheus is not None:
        config = config.model_copy(
            update={"observability": config.observability.model_copy(update={"prometheus": prometheus})}
        )
    try:
        supervisor = Supervisor(config, console=Console(), run_dir=run_dir)
    except (CorralError, OSError) as exc:
        fail(str(exc))
    raise typer.Exit(supervisor.run())
