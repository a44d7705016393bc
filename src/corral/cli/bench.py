"""`corral bench`: a serving benchmark with vLLM-compatible metrics; `corral bench compare`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import resource
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
import uvloop
from rich.console import Console

from corral.bench.benchmark import BenchSettings, LevelResult, run_benchmark, split_base_url
from corral.bench.compare import compare_files, rows_table
from corral.bench.progress import LiveProgress
from corral.bench.report import level_json, summary_table, sweep_json, sweep_table
from corral.bench.runner import LoadSpec, Target
from corral.bench.stats import Slo, parse_slo
from corral.bench.sweep import SweepSpec, parse_sweep
from corral.bench.workload import WorkloadSpec
from corral.cli.common import fail
from corral.errors import CorralError

app = typer.Typer(
    help="Benchmark an OpenAI-compatible server (corral, vLLM, llama.cpp, a hosted API).",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)

SERVER, WORKLOAD, LOAD, METRICS, OUTPUT = "Server", "Workload", "Load", "Metrics", "Output"


class EndpointChoice(StrEnum):
    chat = "chat"
    completions = "completions"


class DatasetChoice(StrEnum):
    random = "random"
    prefix_repetition = "prefix-repetition"
    multi_round_qa = "multi-round-qa"
    sharegpt = "sharegpt"
    custom = "custom"


class TokenizeChoice(StrEnum):
    auto = "auto"
    server = "server"
    approx = "approx"


@app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name to request.", rich_help_panel=SERVER)] = None,
    base_url: Annotated[str, typer.Option(help="Server root (or its /v1).", rich_help_panel=SERVER)] = "http://127.0.0.1:8000",
    endpoint: Annotated[EndpointChoice, typer.Option(help="/v1/chat/completions or /v1/completions.", rich_help_panel=SERVER)] = EndpointChoice.chat,
    api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY", help="Bearer token.", rich_help_panel=SERVER, show_default=False)] = None,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per request.", rich_help_panel=SERVER)] = 600.0,
    ignore_eos: Annotated[bool, typer.Option(help="Send ignore_eos (vLLM, corral) for exact output lengths.", rich_help_panel=SERVER)] = False,
    dataset: Annotated[DatasetChoice, typer.Option(help="Workload.", rich_help_panel=WORKLOAD)] = DatasetChoice.random,
    dataset_path: Annotated[Path | None, typer.Option(help="ShareGPT JSON or custom JSONL file.", rich_help_panel=WORKLOAD, show_default=False)] = None,
    num_prompts: Annotated[int | None, typer.Option(min=1, help="Requests to send (default: 100).", rich_help_panel=WORKLOAD, show_default=False)] = None,
    input_len: Annotated[int | None, typer.Option(min=0, help="Prompt tokens (prefix-repetition: suffix; multi-round-qa: question) (default: per dataset).", rich_help_panel=WORKLOAD, show_default=False)] = None,
    output_len: Annotated[int | None, typer.Option(min=1, help="max_tokens (default: per dataset; sharegpt: the answer's length).", rich_help_panel=WORKLOAD, show_default=False)] = None,
    range_ratio: Annotated[float, typer.Option(min=0.0, help="Lengths uniform in len*(1±ratio), ratio < 1.", rich_help_panel=WORKLOAD)] = 0.0,
    prefix_len: Annotated[int | None, typer.Option(min=0, help="Shared prefix (random, prefix-repetition) or system prompt (multi-round-qa) tokens.", rich_help_panel=WORKLOAD, show_default=False)] = None,
    num_prefixes: Annotated[int, typer.Option(min=1, help="prefix-repetition: distinct prefixes.", rich_help_panel=WORKLOAD)] = 5,
    num_users: Annotated[int, typer.Option(min=1, help="multi-round-qa: users.", rich_help_panel=WORKLOAD)] = 8,
    num_rounds: Annotated[int, typer.Option(min=1, help="multi-round-qa: rounds per user.", rich_help_panel=WORKLOAD)] = 4,
    history_len: Annotated[int, typer.Option(min=0, help="multi-round-qa: tokens of each user's own history.", rich_help_panel=WORKLOAD)] = 256,
    think_time: Annotated[float, typer.Option(min=0.0, help="multi-round-qa: seconds between a user's rounds.", rich_help_panel=WORKLOAD)] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of prompts and arrivals.", rich_help_panel=WORKLOAD)] = 0,
    tokenize: Annotated[TokenizeChoice, typer.Option(help="Count prompt tokens with the server's /tokenize, estimate them, or auto.", rich_help_panel=WORKLOAD)] = TokenizeChoice.auto,
    request_rate: Annotated[float, typer.Option(help="Requests (conversations) per second; inf sends all at once.", rich_help_panel=LOAD)] = math.inf,
    burstiness: Annotated[float, typer.Option(help="Gamma shape of the gaps: 1 = Poisson, <1 burstier, >1 steadier.", rich_help_panel=LOAD)] = 1.0,
    max_concurrency: Annotated[int | None, typer.Option(min=1, help="Most requests in flight.", rich_help_panel=LOAD, show_default=False)] = None,
    duration: Annotated[float | None, typer.Option(help="Run this many seconds instead of --num-prompts once.", rich_help_panel=LOAD, show_default=False)] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up requests, excluded from results.", rich_help_panel=LOAD)] = 0,
    sweep: Annotated[str | None, typer.Option(help="rate=1,2,4 or concurrency=1,4,16: a latency-throughput curve, stopped at saturation.", rich_help_panel=LOAD, show_default=False)] = None,
    keep_up: Annotated[float, typer.Option(help="Sweep: saturated when completions fall below this fraction of the offered rate.", rich_help_panel=LOAD)] = 0.9,
    min_gain: Annotated[float, typer.Option(help="Sweep: saturated when output throughput grows by less than this.", rich_help_panel=LOAD)] = 0.05,
    slo: Annotated[str | None, typer.Option(help="Goodput SLOs in ms: ttft=500,tpot=50,e2el=5000.", rich_help_panel=METRICS, show_default=False)] = None,
    percentiles: Annotated[str, typer.Option(help="Percentiles to report.", rich_help_panel=METRICS)] = "50,90,95,99",
    result_dir: Annotated[Path | None, typer.Option(help="Write NAME.json, PNG plots and NAME.html here.", rich_help_panel=OUTPUT, show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="File name stem (default: DATASET-DATE).", rich_help_panel=OUTPUT, show_default=False)] = None,
    save_detailed: Annotated[bool, typer.Option(help="Per-request records in the JSON.", rich_help_panel=OUTPUT)] = False,
    plots: Annotated[bool, typer.Option(help="PNG plots and the HTML report (with --result-dir).", rich_help_panel=OUTPUT)] = True,
    progress: Annotated[bool, typer.Option(help="Live progress view.", rich_help_panel=OUTPUT)] = True,
) -> None:
    """Benchmark a server: TTFT, TPOT, ITL, E2EL, throughput, goodput (as `vllm bench serve`)."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        fail("--model is required: the model name the server serves (see `corral models --url`)")
    if not re.match(r"^https?://[^/\s]+", base_url):
        fail(f"--base-url: '{base_url}' is not an http(s) URL")
    _, api_url = split_base_url(base_url)
    target = Target(api_url, model, endpoint.value, api_key, ignore_eos, timeout)
    spec = _workload(dataset.value, dataset_path, num_prompts, input_len, output_len, range_ratio,
                     prefix_len, num_prefixes, num_users, num_rounds, history_len, think_time, seed)
    load = _load(request_rate, burstiness, max_concurrency, duration, seed)
    settings = BenchSettings(
        target, spec, load, warmup, _percentiles(percentiles), _slo(slo), tokenize.value,
        _sweep(sweep, keep_up, min_gain, load),
    )
    console = Console()
    levels = _run(settings, console, progress and console.is_terminal)
    for level in levels:
        console.print(summary_table(level, settings.percentiles), highlight=False)
    if settings.sweep is not None:
        console.print(sweep_table(levels))
    if result_dir is not None:
        stem = name or f"{spec.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
        for path in _save(result_dir, stem, levels, settings, save_detailed, plots):
            console.print(f"wrote {path}", highlight=False)


@app.command("compare")
def compare(
    a: Annotated[Path, typer.Argument(help="Baseline result JSON.", exists=True, dir_okay=False)],
    b: Annotated[Path, typer.Argument(help="Result JSON to compare with it.", exists=True, dir_okay=False)],
    threshold: Annotated[float, typer.Option(min=0.0, help="Relative change below which a metric is '~'.")] = 0.02,
) -> None:
    """Print what changed from A to B (single results, or sweeps level by level)."""
    try:
        levels = compare_files(a, b, threshold)
    except ValueError as exc:
        fail(str(exc))
    console = Console()
    for label, rows in levels:
        title = f"{a.name} -> {b.name}" + (f" ({label})" if label else "")
        console.print(rows_table(rows, title, (a.name, b.name)))


def _workload(dataset: str, path: Path | None, num_prompts: int | None, input_len: int | None,
              output_len: int | None, range_ratio: float, prefix_len: int | None, num_prefixes: int,
              num_users: int, num_rounds: int, history_len: int, think_time: float, seed: int) -> WorkloadSpec:
    if not range_ratio < 1:
        fail(f"--range-ratio: {range_ratio} must be >= 0 and < 1")
    if dataset in ("sharegpt", "custom") and path is None:
        fail(f"--dataset-path: the {dataset} dataset reads a local file; give its path")
    if dataset == "multi-round-qa" and num_prompts not in (None, num_users * num_rounds):
        fail(f"--num-prompts: multi-round-qa sends --num-users x --num-rounds = {num_users * num_rounds} requests")
    return WorkloadSpec(
        dataset, num_prompts or 100, input_len, output_len, range_ratio, prefix_len, num_prefixes,  # type: ignore[arg-type]
        num_users, num_rounds, history_len, think_time, None if path is None else str(path), seed,
    )


def _load(rate: float, burstiness: float, max_concurrency: int | None, duration: float | None, seed: int) -> LoadSpec:
    if not rate > 0:
        fail(f"--request-rate: {rate} must be > 0 (inf sends everything at once)")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        fail(f"--burstiness: {burstiness} must be a finite number > 0")
    if duration is not None:
        if not (duration > 0 and math.isfinite(duration)):
            fail(f"--duration: {duration} must be a number of seconds > 0")
        if math.isinf(rate) and max_concurrency is None:
            fail("--duration: with --request-rate inf, give --max-concurrency (a closed loop)")
    return LoadSpec(rate, burstiness, max_concurrency, duration, seed)


def _percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        fail(f"--percentiles: '{text}' is not a comma-separated list of numbers")
    if not values or not all(0 < p < 100 for p in values):
        fail(f"--percentiles: '{text}' must list numbers between 0 and 100")
    return values


def _slo(text: str | None) -> Slo | None:
    if text is None:
        return None
    try:
        return parse_slo(text)
    except ValueError as exc:
        fail(f"--slo: {exc}")


def _sweep(text: str | None, keep_up: float, min_gain: float, load: LoadSpec) -> SweepSpec | None:
    if text is None:
        return None
    try:
        spec = parse_sweep(text)
    except ValueError as exc:
        fail(f"--sweep: {exc}")
    if spec.kind == "rate" and not math.isinf(load.request_rate):
        fail("--request-rate: cannot be combined with --sweep rate=...; the sweep sets the rate")
    if spec.kind == "concurrency" and load.max_concurrency is not None:
        fail("--max-concurrency: cannot be combined with --sweep concurrency=...")
    if not 0 < keep_up <= 1:
        fail(f"--keep-up: {keep_up} must be in (0, 1]")
    if min_gain < 0:
        fail(f"--min-gain: {min_gain} must be >= 0")
    return SweepSpec(spec.kind, spec.levels, keep_up, min_gain)


def _run(settings: BenchSettings, console: Console, live: bool) -> list[LevelResult]:
    observer = LiveProgress(console) if live else None
    _raise_open_files_limit()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run_benchmark(settings, observer))
    except (CorralError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    finally:
        if observer is not None:
            observer.close()


def _raise_open_files_limit() -> None:
    """One socket per request in flight: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _save(directory: Path, stem: str, levels: list[LevelResult], settings: BenchSettings,
          detailed: bool, plots: bool) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    if settings.sweep is None:
        data = level_json(levels[0], settings, detailed=detailed)
    else:
        data = sweep_json(levels, settings, detailed=detailed)
    path = directory / f"{stem}.json"
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    written = [path]
    if plots:
        from corral.bench.plots import write_plots  # matplotlib is only imported when plotting

        written += write_plots(directory, stem, levels, settings)
    return written
