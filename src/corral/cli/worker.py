"""`corral worker`: one engine process serving one model of the stack."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import StackOption, fail, load_or_exit, setup_logging
from corral.errors import CorralError


def worker(
    model: Annotated[str, typer.Option("--model", "-m", help="Name (or alias) of the model to serve.")],
    stack: StackOption = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8001,
    role: Annotated[
        str, typer.Option(help="both | prefill (only prefills; stores the KV in the shared tier) | decode")
    ] = "both",
) -> None:
    """Serve one model of the stack over the OpenAI API (started by `corral up`, or by hand)."""
    setup_logging()
    config = load_or_exit(stack)
    try:
        name = config.model(model).name
    except CorralError as exc:
        fail(str(exc))
    if role not in ("both", "prefill", "decode"):
        fail(f"--role: must be both, prefill or decode (got {role!r})")
    from corral.worker.server import serve  # heavy: llama.cpp, onnxruntime

    try:
        serve(config, name, host=host, port=port, role=role)  # type: ignore[arg-type]
    except CorralError as exc:
        fail(str(exc), code=1)
