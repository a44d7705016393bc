"""What every command shares: loading the stack file with CLI-friendly errors, logging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from corral.config import StackConfig, load_stack
from corral.errors import CorralError

StackArg = Annotated[
    Path | None,
    typer.Argument(help="Stack file (YAML). Default: the built-in stack (examples/stack.yaml).",
                   show_default=False),
]
StackOption = Annotated[
    Path | None,
    typer.Option("--stack", "-s", help="Stack file (YAML). Default: the built-in stack.", show_default=False),
]


def fail(message: str, code: int = 2) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def load_or_exit(path: Path | None) -> StackConfig:
    try:
        return load_stack(path)
    except CorralError as exc:
        fail(str(exc))


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
