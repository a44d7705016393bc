"""`corral`: the entry point. Commands live in their own modules and are registered here."""

from __future__ import annotations

from typing import Annotated

import typer

from corral import __version__
from corral.cli import bench, models, observability, plan, router, top, up, worker
from corral.cli import deploy as deploy_cli

app = typer.Typer(
    name="corral",
    help="A self-hosted, multi-model LLM serving stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"corral {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """A self-hosted, multi-model LLM serving stack."""


app.command("up")(up.up)
app.command("worker")(worker.worker)
app.command("router")(router.router)
app.command("models")(models.models)
app.command("plan")(plan.plan)
app.command("top")(top.top)
app.command("observability")(observability.observability)
app.add_typer(bench.app, name="bench")
app.add_typer(deploy_cli.app, name="deploy")


def main() -> None:
    app()
