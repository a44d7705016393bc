"""`corral router`: the OpenAI-compatible gateway in front of the workers."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import StackOption, fail, load_or_exit, setup_logging
from corral.errors import CorralError


def router(
    stack: StackOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (overrides router.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (overrides router.port).")] = None,
) -> None:
    """Route OpenAI requests to the workers listed in the stack file's model endpoints."""
    setup_logging()
    config = load_or_exit(stack)
    from corral.router.server import serve

    try:
        serve(config, host=host, port=port)
    except CorralError as exc:
        fail(str(exc), code=1)
