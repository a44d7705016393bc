"""`corral bench compare A.json B.json`: what changed from A to B, metric by metric.

Works on single results and on sweeps (levels are matched by label, e.g. ``rate=4``). Each
metric knows which direction is better, so a change is called better or worse when it moves
by more than the threshold (default 2 %), else ``~``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from rich.table import Table

Better = Literal["higher", "lower"]

#: (JSON key, shown as, which direction is better)
METRICS: tuple[tuple[str, str, Better], ...] = (
    ("completed", "completed", "higher"),
    ("failed", "failed", "lower"),
    ("duration", "duration s", "lower"),
    ("request_throughput", "request throughput req/s", "higher"),
    ("request_goodput", "goodput req/s", "higher"),
    ("output_throughput", "output tok/s", "higher"),
    ("total_token_throughput", "total tok/s", "higher"),
    ("max_output_tokens_per_s", "peak output tok/s", "higher"),
    ("max_concurrent_requests", "peak concurrency", "higher"),
    *(
        (f"{stat}_{name}_ms", f"{stat} {name.upper()} ms", "lower")
        for name in ("ttft", "tpot", "itl", "e2el", "ttst")
        for stat in ("mean", "median", "p90", "p99")
    ),
)


@dataclass(frozen=True, slots=True)
class Row:
    metric: str
    a: float | None
    b: float | None
    change: float | None  # (b - a) / a
    verdict: str  # better, worse, ~, or "" when not comparable


def load_levels(path: Path) -> dict[str, dict[str, Any]]:
    """label -> result; a single result has the label "" (or its own label)."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return {str(r.get("label", i)): r for i, r in enumerate(data["results"])}
    if isinstance(data, dict) and "completed" in data:
        return {str(data.get("label") or ""): data}
    raise ValueError(f"{path} is not a corral bench (or vllm bench serve) result")


def compare_results(a: dict[str, Any], b: dict[str, Any], threshold: float = 0.02) -> list[Row]:
    rows = []
    for key, shown, better in METRICS:
        va, vb = _number(a.get(key)), _number(b.get(key))
        if va is None and vb is None:
            continue
        rows.append(_row(shown, va, vb, better, threshold))
    return rows


def _row(shown: str, va: float | None, vb: float | None, better: Better, threshold: float) -> Row:
    if va is None or vb is None:
        return Row(shown, va, vb, None, "")
    if va == 0:
        change = None if vb == 0 else float("inf") if vb > 0 else float("-inf")
    else:
        change = (vb - va) / abs(va)
    if change is None or abs(change) <= threshold:
        return Row(shown, va, vb, change, "~")
    improved = (change > 0) == (better == "higher")
    return Row(shown, va, vb, change, "better" if improved else "worse")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def compare_files(path_a: Path, path_b: Path, threshold: float = 0.02) -> list[tuple[str, list[Row]]]:
    """(level label, rows) for every level present in both files."""
    a, b = load_levels(path_a), load_levels(path_b)
    if len(a) == 1 and len(b) == 1:
        return [("", compare_results(next(iter(a.values())), next(iter(b.values())), threshold))]
    common = [label for label in a if label in b]
    if not common:
        raise ValueError(f"{path_a} and {path_b} share no sweep level")
    return [(label, compare_results(a[label], b[label], threshold)) for label in common]


def rows_table(rows: list[Row], title: str, names: tuple[str, str] = ("A", "B")) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column(names[0], justify="right")
    table.add_column(names[1], justify="right")
    table.add_column("change", justify="right")
    table.add_column("")
    styles = {"better": "green", "worse": "red"}
    for row in rows:
        change = "" if row.change is None else f"{row.change:+.1%}"
        verdict = row.verdict
        if verdict in styles:
            verdict = f"[{styles[verdict]}]{verdict}[/]"
        table.add_row(row.metric, _fmt(row.a), _fmt(row.b), change, verdict)
    return table


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value == int(value) and abs(value) >= 100 else f"{value:.2f}"
