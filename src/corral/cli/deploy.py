"""`corral deploy render STACK --target eks|onprem -o DIR`: Kubernetes manifests for the stack.

    corral deploy render stack.yaml --target eks -o deploy/
    eksctl create cluster -f deploy/eksctl/cluster.yaml     # eks only
    kubectl apply -f deploy/manifests/

The manifests are validated before anything is written (see corral.deploy.validate);
docs/deploy.md walks through the whole path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from corral.cli.common import fail, load_or_exit
from corral.deploy.placement import TARGETS, Target
from corral.deploy.render import Rendering, render, write
from corral.deploy.validate import core_validation_available, validate_rendering
from corral.errors import CorralError

app = typer.Typer(help="Deploy the stack to Kubernetes (EKS or on-prem).", no_args_is_help=True)


def _target(name: str) -> Target:
    for target in TARGETS:
        if name == target:
            return target
    fail(f"--target: unknown target '{name}'; choose one of: {', '.join(TARGETS)}")


def _validate(rendering: Rendering, version: str, console: Console) -> None:
    problems = validate_rendering(rendering, version)
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems)
        fail(f"the rendered manifests do not validate against Kubernetes {version}:\n{listed}", code=1)
    if core_validation_available():
        console.print(f"validated {sum(1 for _ in rendering.objects())} objects against Kubernetes {version}",
                      highlight=False)
    else:
        console.print("[yellow]note:[/] kubernetes-validate is not installed: checked the custom resources only "
                      "(pip install 'corral[deploy]' for the Kubernetes schemas)", highlight=False)


@app.command("render")
def render_command(
    stack: Annotated[Path, typer.Argument(help="Stack file (YAML), e.g. from `corral plan --emit`.")],
    target: Annotated[str, typer.Option("--target", "-t", help="eks or onprem.")] = "eks",
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write manifests/ (and eksctl/) to.")] = Path(
        "deploy"
    ),
    validate: Annotated[bool, typer.Option(help="Validate the objects before writing them.")] = True,
) -> None:
    """Render the stack as Kubernetes manifests: router, vLLM workers, Redis, monitoring, autoscaling."""
    chosen = _target(target)
    config = load_or_exit(stack)
    console = Console(soft_wrap=True)  # paths and commands stay whole, to copy and paste
    try:
        rendering = render(config, chosen)
    except CorralError as exc:
        fail(str(exc))
    if validate:
        _validate(rendering, config.deploy.kubernetes_version, console)
    try:
        paths = write(rendering, out)
    except CorralError as exc:
        fail(str(exc), code=1)
    for path in paths:
        console.print(str(path), highlight=False)
    if chosen == "eks":
        console.print(f"\nnext: eksctl create cluster -f {out / 'eksctl' / 'cluster.yaml'}", highlight=False)
    console.print(f"{'then' if chosen == 'eks' else 'next'}: kubectl apply -f {out / 'manifests'}", highlight=False)
