"""`corral models [STACK]`: what a stack serves, or what a running router serves."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.cli.common import StackArg, fail, load_or_exit


def models(
    stack: StackArg = None,
    url: Annotated[
        str | None, typer.Option(help="Ask a running router instead, e.g. http://127.0.0.1:8000.")
    ] = None,
) -> None:
    """List the models of a stack file (name, aliases, task, engine, replicas, source)."""
    console = Console()
    if url is not None:
        console.print(_running_models(url.rstrip("/")))
        return
    config = load_or_exit(stack)
    table = Table(title="models")
    for column in ("model", "aliases", "task", "engine", "replicas", "threads", "context", "source"):
        table.add_column(column)
    for model in config.models:
        replicas = str(model.replicas) + (f" + {len(model.endpoints)} external" if model.endpoints else "")
        table.add_row(model.name, ", ".join(model.aliases), model.task, model.engine, replicas,
                      str(model.threads), str(model.context_length), model.source)
    console.print(table)


def _running_models(base: str) -> Table:
    try:
        with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as response:
            listing = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        fail(f"--url: cannot list models at {base}/v1/models: {exc}")
    table = Table(title=f"models served at {base}")
    table.add_column("id")
    table.add_column("owned_by")
    for entry in listing.get("data", []):
        table.add_row(str(entry.get("id")), str(entry.get("owned_by", "")))
    return table
