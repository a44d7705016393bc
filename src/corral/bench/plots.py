"""PNG plots (matplotlib, Agg, no pyplot state) and one self-contained HTML report.

Per run: TTFT and ITL distributions (histograms). Per sweep: latency against throughput.
The HTML embeds the PNGs as base64 and the summary tables, so it is a single file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from corral.bench.benchmark import BenchSettings, LevelResult
from corral.bench.report import summary_table
from corral.bench.stats import Distribution, samples


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def distributions_png(level: LevelResult) -> bytes:
    """Histograms of TTFT and ITL (ms) of one run, with mean and p99 marked."""
    values = samples([r for r in level.results if r.success])
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "ttft", "Time to first token"), (axes[1], "itl", "Inter-token latency")):
        ms = np.asarray(values[key], dtype=float) * 1000.0
        ax.set_title(f"{title} ({len(ms)} samples)")
        ax.set_xlabel("ms")
        ax.set_ylabel("count")
        if len(ms) == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.hist(ms, bins=min(60, max(10, len(ms) // 5)), color="#4878a8")
        for value, style, name in ((np.mean(ms), "-", "mean"), (np.percentile(ms, 99), "--", "p99")):
            ax.axvline(float(value), color="#c03030", linestyle=style, label=f"{name} {value:.1f}")
        ax.legend(loc="upper right")
    if level.label:
        fig.suptitle(level.label)
    return _png(fig)


def sweep_png(levels: list[LevelResult]) -> bytes:
    """Latency against achieved output throughput, one point per sweep level."""
    throughput = [lv.metrics.output_throughput for lv in levels]
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    for ax, keys, title in (
        (left, ("ttft",), "TTFT"),
        (right, ("tpot", "itl"), "TPOT / ITL"),
    ):
        for key in keys:
            dists = [lv.metrics.distributions.get(key) for lv in levels]
            ax.plot(throughput, [_value(d, "mean") for d in dists], "o-", label=f"mean {key.upper()}")
            ax.plot(throughput, [_value(d, 99.0) for d in dists], "s--", label=f"p99 {key.upper()}")
        for x, lv in zip(throughput, levels, strict=True):
            ax.annotate(lv.label, (x, 0), textcoords="offset points", xytext=(0, 4), fontsize=7,
                        xycoords=("data", "axes fraction"), rotation=90)
        ax.set_title(f"{title} vs throughput")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel("ms")
        ax.legend()
    return _png(fig)


def _value(dist: Distribution | None, which: str | float) -> float:
    if dist is None:
        return float("nan")
    return dist.mean_ms if which == "mean" else dist.percentiles_ms.get(float(which), float("nan"))


def write_plots(directory: Path, stem: str, levels: list[LevelResult], settings: BenchSettings) -> list[Path]:
    """``{stem}-ttft-itl[-LEVEL].png``, ``{stem}-sweep.png`` (sweeps) and ``{stem}.html``."""
    directory.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, bytes]] = []
    if settings.sweep is not None:
        images.append((f"{stem}-sweep.png", sweep_png(levels)))
    for lv in levels:
        suffix = f"-{lv.label.replace('=', '')}" if lv.label else ""
        images.append((f"{stem}-ttft-itl{suffix}.png", distributions_png(lv)))
    written = []
    for name, data in images:
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    page = directory / f"{stem}.html"
    page.write_text(html_report(levels, settings, images), encoding="utf-8")
    return [*written, page]


def html_report(levels: list[LevelResult], settings: BenchSettings, images: list[tuple[str, bytes]]) -> str:
    target, spec = settings.target, settings.workload
    title = f"corral bench: {target.model} at {target.url}"
    facts = (
        f"dataset {spec.dataset}, seed {spec.seed}, endpoint {target.endpoint}, "
        f"token counting {levels[0].counter if levels else '-'}"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "pre{background:#f6f6f6;padding:1em;display:inline-block;vertical-align:top;margin:0 1em 1em 0}"
        "img{max-width:100%;border:1px solid #ddd;margin:1em 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(facts)}</p>",
    ]
    for name, data in images:
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,{encoded}'>")
    parts.append("<h2>Summaries</h2>")
    for lv in levels:
        parts.append(f"<pre>{html.escape(summary_table(lv, settings.percentiles))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
