"""What `corral up` shows: the process table while models load, then how to call the stack."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from corral.config import StackConfig, dial_host
from corral.supervisor.process import ManagedProcess, ProcessSpec, ProcessState

_STATE_STYLE = {
    ProcessState.PENDING: "dim",
    ProcessState.STARTING: "yellow",
    ProcessState.READY: "green",
    ProcessState.BACKOFF: "red",
    ProcessState.STOPPING: "yellow",
    ProcessState.STOPPED: "dim",
}


def render_processes(processes: list[ManagedProcess], now: float) -> Table:
    table = Table(title="corral: starting the stack", title_justify="left")
    for column in ("process", "model", "port", "pid", "state", "time"):
        table.add_column(column)
    for process in processes:
        spec = process.spec
        if process.state is ProcessState.PENDING:
            elapsed = ""
        else:
            until = process.ready_at if process.ready_at is not None else now
            elapsed = f"{until - process.started_at:.1f} s"
        state = "loading model" if process.state is ProcessState.STARTING and spec.kind == "worker" else process.state.value
        table.add_row(
            spec.name, spec.model or "-", str(spec.port), str(process.pid or "-"),
            Text(state, style=_STATE_STYLE[process.state]), elapsed,
        )
    return table


def _example_model(stack: StackConfig, task: str) -> str | None:
    return next((m.name for m in stack.models if m.task == task), None)


def render_banner(stack: StackConfig, extras: tuple[ProcessSpec, ...] = ()) -> Panel:
    """The ready message: the URL, the models, and copy-paste examples for curl and openai."""
    router = stack.router
    host = dial_host(router.host)
    base = f"http://{host}:{router.port}/v1"
    models = Table(box=None, show_header=True, pad_edge=False)
    for column in ("model", "task", "replicas", "aliases"):
        models.add_column(column)
    for model in stack.models:
        models.add_row(model.name, model.task, str(len(model.endpoints)), ", ".join(model.aliases))
    parts: list[object] = [Text.from_markup(f"[bold green]corral is up[/] at [bold]{base}[/]\n"), models]
    chat = _example_model(stack, "chat")
    if chat is not None:
        curl = (
            f"curl {base}/chat/completions -H 'Content-Type: application/json' \\\n"
            f"  -d '{{\"model\": \"{chat}\", \"temperature\": 0, \"messages\": [{{\"role\": \"user\", "
            f"\"content\": \"What is the capital of France? Answer in one sentence.\"}}]}}'"
        )
        python = (
            "# pip install openai\n"
            "from openai import OpenAI\n"
            f"client = OpenAI(base_url=\"{base}\", api_key=\"unused\")\n"
            f"reply = client.chat.completions.create(model=\"{chat}\", temperature=0,\n"
            "    messages=[{\"role\": \"user\", \"content\": \"What is the capital of France? Answer in one sentence.\"}])\n"
            "print(reply.choices[0].message.content)"
        )
        parts += [Text("\ncurl:", style="bold"), Text(curl), Text("\nPython (openai):", style="bold"), Text(python)]
    for spec in extras:
        if spec.kind == "prometheus":
            parts.append(Text(f"\nPrometheus: http://127.0.0.1:{spec.port} (corral's alert rules loaded; "
                              "Grafana dashboards in the run directory's observability/grafana)"))
    parts.append(Text("\nCtrl-C drains in-flight requests and stops everything.", style="dim"))
    return Panel(Group(*parts), expand=False)  # type: ignore[arg-type]
