"""The vLLM-layout table, the JSON result (vLLM's field names), plots/HTML, and compare."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from corral.bench.benchmark import BenchSettings, LevelResult
from corral.bench.compare import compare_files, compare_results
from corral.bench.records import RequestResult
from corral.bench.report import level_json, p_word, summary_table, sweep_json
from corral.bench.runner import LoadSpec, Target
from corral.bench.stats import Slo, compute_metrics
from corral.bench.sweep import SweepSpec
from corral.bench.workload import WorkloadSpec

VLLM_FIELDS = (
    "date backend model_id num_prompts request_rate burstiness max_concurrency duration completed "
    "failed total_input_tokens total_output_tokens request_throughput request_goodput output_throughput "
    "total_token_throughput max_output_tokens_per_s max_concurrent_requests"
).split()

RESULTS = [
    RequestResult(True, 0.0, 0.0, (0.1, 0.2, 0.3), 10, 3, "usage", text="abc"),
    RequestResult(True, 0.5, 0.4, (0.7, 0.75), 10, 2, "usage"),
    RequestResult(False, 0.6, 0.6, error="http_503", error_detail="busy"),
]
SETTINGS = BenchSettings(Target("http://127.0.0.1:8000/v1", "chat"), WorkloadSpec(), LoadSpec(4.0, max_concurrency=8),
                         slo=Slo(ttft_ms=150), percentiles=(50, 99, 99.9))


def level(label: str = "", results: list[RequestResult] = RESULTS) -> LevelResult:
    metrics = compute_metrics(results, 1.0, SETTINGS.percentiles, SETTINGS.slo)
    return LevelResult(label, SETTINGS.load, "random", "server", results, metrics, 3)


def test_p_word():
    assert (p_word(99), p_word(99.9), p_word(50.0)) == ("99", "99.9", "50")


def test_json_has_vllm_fields_and_ours():
    data = level_json(level(), SETTINGS)
    assert all(name in data for name in VLLM_FIELDS)
    for metric in ("ttft", "tpot", "itl", "e2el", "ttst", "e2el_per_token", "queue"):
        for stat in ("mean", "median", "std", "p50", "p99", "p99.9"):
            assert f"{stat}_{metric}_ms" in data
    assert data["backend"] == "openai-chat"
    assert (data["completed"], data["failed"], data["errors_by_kind"]) == (2, 1, {"http_503": 1})
    assert data["mean_ttft_ms"] == pytest.approx(150)
    assert data["request_goodput"] == pytest.approx(1.0)  # TTFTs 100 and 200 ms against 150
    assert data["goodput_slo_ms"] == {"ttft": 150}
    assert data["request_rate"] == 4.0 and data["max_concurrency"] == 8
    assert "requests" not in data and "ttfts" not in data
    orjson.dumps(data)  # serializable


def test_detailed_json_has_per_request_records():
    data = level_json(level(), SETTINGS, detailed=True)
    assert data["ttfts"] == pytest.approx([0.1, 0.2, 0.0])
    assert data["itls"][0] == pytest.approx([0.1, 0.1])
    assert data["errors"] == ["", "", "busy"]
    first = data["requests"][1]
    assert first["scheduled_s"] == pytest.approx(0.4) and first["start_s"] == pytest.approx(0.5)
    assert first["chunk_times_s"] == pytest.approx([0.7, 0.75])


def test_summary_table_layout():
    table = summary_table(level(), (50, 99))
    lines = table.splitlines()
    assert lines[0] == "============ Serving Benchmark Result ============"
    assert lines[-1] == "=" * 50
    assert "Successful requests:                     2         " in lines
    assert "Request goodput (req/s):                 1.00      " in lines
    assert "---------------Time to First Token----------------" in lines
    assert "-----Time per Output Token (excl. 1st token)------" in lines
    assert any(line.startswith("P99 ITL (ms):") for line in lines)
    assert "http_503:                                1         " in lines
    assert "Request rate configured (RPS):           4.00      " in lines


def test_sweep_json_and_compare(tmp_path: Path):
    settings = BenchSettings(SETTINGS.target, SETTINGS.workload, sweep=SweepSpec("concurrency", (1, 2)))
    a, b = level("concurrency=1"), level("concurrency=2", RESULTS[:2])
    b.saturated = "plateau: ..."
    data = sweep_json([a, b], settings)
    assert data["sweep"]["saturated_at"] == "concurrency=2"
    assert [r["label"] for r in data["results"]] == ["concurrency=1", "concurrency=2"]
    path_a, path_b = tmp_path / "a.json", tmp_path / "b.json"
    path_a.write_bytes(orjson.dumps(data))
    path_b.write_bytes(orjson.dumps(data))
    assert [label for label, _ in compare_files(path_a, path_b)] == ["concurrency=1", "concurrency=2"]


def test_compare_verdicts():
    a = {"request_throughput": 10.0, "mean_ttft_ms": 100.0, "p99_itl_ms": 20.0, "failed": 0, "completed": 5}
    b = {"request_throughput": 12.0, "mean_ttft_ms": 130.0, "p99_itl_ms": 20.1, "failed": 2, "completed": 5}
    rows = {r.metric: r for r in compare_results(a, b)}
    assert rows["request throughput req/s"].verdict == "better"
    assert rows["request throughput req/s"].change == pytest.approx(0.2)
    assert rows["mean TTFT ms"].verdict == "worse"
    assert rows["p99 ITL ms"].verdict == "~"
    assert rows["failed"].verdict == "worse" and math.isinf(rows["failed"].change or 0)
    assert "mean TPOT ms" not in rows  # absent from both


def test_compare_rejects_other_json(tmp_path: Path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a corral bench"):
        compare_files(path, path)


def test_plots_and_html(tmp_path: Path):
    from corral.bench.plots import write_plots

    settings = BenchSettings(SETTINGS.target, SETTINGS.workload, sweep=SweepSpec("rate", (1, 2)))
    written = write_plots(tmp_path, "run", [level("rate=1"), level("rate=2")], settings)
    names = sorted(p.name for p in written)
    assert names == ["run-sweep.png", "run-ttft-itl-rate1.png", "run-ttft-itl-rate2.png", "run.html"]
    assert all((tmp_path / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names if n.endswith(".png"))
    page = (tmp_path / "run.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "Serving Benchmark Result" in page
