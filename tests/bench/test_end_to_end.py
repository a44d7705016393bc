"""`corral bench` against the scripted fake engine, a real process on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
from collections import defaultdict
from dataclasses import replace

import orjson
import pytest
from typer.testing import CliRunner

from corral.bench.benchmark import BenchSettings, run_benchmark
from corral.bench.runner import LoadSpec, Target
from corral.bench.stats import Distribution
from corral.bench.sweep import SweepSpec
from corral.bench.workload import WorkloadSpec
from corral.cli.main import app

pytestmark = pytest.mark.slow


def settings(base_url: str, **workload: object) -> BenchSettings:
    spec = WorkloadSpec(**{"num_prompts": 20, "input_len": 20, "output_len": 8, **workload})  # type: ignore[arg-type]
    return BenchSettings(Target(base_url + "/v1", "fake"), spec, LoadSpec(max_concurrency=2))


async def test_recovers_the_scripted_ttft_and_itl(start_engine):
    """Within 2 ms of the script. Best of three runs: on this shared 2-core machine a busy
    neighbour delays process wake-ups by a few ms, which no client can measure away."""
    url = start_engine(ttft_ms=40, itl_ms=10)
    for _ in range(3):
        [level] = await run_benchmark(replace(settings(url, num_prompts=24), warmup=2))
        m = level.metrics
        assert (m.completed, m.failed) == (24, 0)
        assert level.counter == "server"
        assert (m.total_input_tokens, m.total_output_tokens) == (24 * 20, 24 * 8)  # exact via /tokenize
        assert m.max_concurrent_requests == 2
        errors = timing_errors(m.distributions, {"ttft": 40, "itl": 10, "tpot": 10, "e2el": 40 + 7 * 10, "ttst": 10})
        if not errors:
            return
    load = os.getloadavg()[0]
    if load >= (os.cpu_count() or 1):
        pytest.skip(f"machine overloaded (load average {load:.1f}): {errors}")
    pytest.fail(f"not within 2 ms of the script: {errors}")


def timing_errors(distributions: dict[str, Distribution | None], expected_ms: dict[str, float]) -> list[str]:
    errors = []
    for name, ms in expected_ms.items():
        dist = distributions[name]
        assert dist is not None
        if abs(dist.median_ms - ms) >= 2.0 or abs(dist.mean_ms - ms) >= 2.0:
            errors.append(f"{name}: mean {dist.mean_ms:.2f}, median {dist.median_ms:.2f}, script {ms}")
    return errors


async def test_errors_by_kind_and_output_tokens_without_usage(start_engine):
    url = start_engine(fail_every=4, no_usage=True)
    [level] = await run_benchmark(settings(url, num_prompts=40))
    m = level.metrics
    # the check request is the engine's 1st; measured ones are its 2nd..41st: 10 multiples of 4
    assert (m.completed, m.failed, m.errors_by_kind) == (30, 10, {"http_503": 10})
    assert m.output_tokens_sources == {"tokenize": 30}  # no usage: counted with /tokenize after the run
    assert m.total_output_tokens == 30 * 8
    bare = start_engine(no_usage=True, no_tokenize=True)
    [level] = await run_benchmark(settings(bare, num_prompts=4))
    assert level.counter == "approx" and level.metrics.output_tokens_sources == {"chunks": 4}


async def test_multi_round_qa_sends_each_user_their_growing_history(start_engine, tmp_path):
    log = tmp_path / "requests.jsonl"
    url = start_engine(ttft_ms=5, itl_ms=1, log=log)
    spec = {"dataset": "multi-round-qa", "num_users": 3, "num_rounds": 3, "prefix_len": 10,
            "history_len": 6, "input_len": 4, "output_len": 3, "think_time_s": 0.05}
    [level] = await run_benchmark(replace(settings(url, **spec), load=LoadSpec()))
    assert level.metrics.completed == 9
    bodies = [orjson.loads(line) for line in log.read_bytes().splitlines()][1:]  # [0]: the check
    by_user = defaultdict(list)
    for body in bodies:
        by_user[body["user"]].append(body["messages"])
    assert sorted(by_user) == ["bench-user-0", "bench-user-1", "bench-user-2"]
    for rounds in by_user.values():
        assert [len(m) for m in rounds] == [2, 4, 6]  # system + (user, assistant) * r + user
        assert rounds[2][:4] == rounds[1]  # the history is kept verbatim ...
        assert rounds[1][2] == {"role": "assistant", "content": "tok0 tok1 tok2 "}  # ... with the answers
    assert len({tuple(m[0].items()) for r in by_user.values() for m in r}) == 1  # one shared system prompt
    per_user = defaultdict(list)
    for r in level.results:
        per_user[r.conversation].append(r)
    for results in per_user.values():
        results.sort(key=lambda r: r.round)
        for before, after in itertools.pairwise(results):
            assert after.start_s >= before.end_s + 0.05  # rounds are sequential, after the think time
    assert all(r.prompt_tokens for r in level.results)  # from usage: known only after the run


async def test_duration_runs(start_engine):
    url = start_engine(ttft_ms=10, itl_ms=5)
    closed = replace(settings(url, output_len=4), load=LoadSpec(max_concurrency=2, duration_s=0.5))
    [level] = await run_benchmark(closed)
    m = level.metrics
    assert m.failed == 0 and 0.5 <= m.duration_s < 0.7
    assert 20 <= m.completed <= 45  # ~25 ms per request, two at a time
    opened = replace(closed, load=LoadSpec(request_rate=40, duration_s=0.5, seed=1))
    [level] = await run_benchmark(opened)
    assert 8 <= level.metrics.completed <= 35  # Poisson, mean 20


async def test_rate_sweep_stops_once_the_server_falls_behind(start_engine):
    url = start_engine(ttft_ms=5, itl_ms=5, max_parallel=1)  # 20 ms per answer: 50 answers/s at most
    sweep = SweepSpec("rate", (20.0, 200.0, 400.0))
    levels = await run_benchmark(replace(settings(url, output_len=4), load=LoadSpec(), sweep=sweep))
    assert [lv.label for lv in levels] == ["rate=20", "rate=200"]
    assert levels[0].saturated is None and levels[0].keep_up == pytest.approx(1.0, abs=0.1)
    assert (levels[1].saturated or "").startswith("falls behind")


async def test_concurrency_sweep_stops_at_the_plateau(start_engine):
    url = start_engine(ttft_ms=5, itl_ms=5, max_parallel=2)  # two answers at a time, ~40 ms each
    sweep = SweepSpec("concurrency", (1.0, 2.0, 4.0, 8.0))
    levels = await run_benchmark(replace(settings(url, num_prompts=16), load=LoadSpec(), sweep=sweep))
    assert [lv.label for lv in levels] == ["concurrency=1", "concurrency=2", "concurrency=4"]
    one, two, _four = (lv.metrics.output_throughput for lv in levels)
    assert two == pytest.approx(2 * one, rel=0.15)
    assert (levels[2].saturated or "").startswith("plateau")


def test_cli_writes_json_plots_html_and_compares(start_engine, tmp_path):
    url = start_engine(ttft_ms=2, itl_ms=1)
    runner = CliRunner()
    args = ["bench", "-m", "fake", "--base-url", url, "--endpoint", "completions", "--num-prompts", "12",
            "--input-len", "16", "--output-len", "4", "--request-rate", "200", "--burstiness", "2",
            "--slo", "ttft=1000,tpot=1000", "--result-dir", str(tmp_path), "--save-detailed"]
    for name in ("a", "b"):
        result = runner.invoke(app, [*args, "--name", name])
        assert result.exit_code == 0, result.output
    assert "============ Serving Benchmark Result ============" in result.output
    data = json.loads((tmp_path / "a.json").read_text())
    assert (data["completed"], data["backend"], data["request_rate"]) == (12, "openai", 200.0)
    assert data["request_goodput"] == pytest.approx(data["request_throughput"])
    assert len(data["requests"]) == 12 and len(data["itls"]) == 12
    assert (tmp_path / "a-ttft-itl.png").exists() and (tmp_path / "a.html").exists()
    compared = runner.invoke(app, ["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert compared.exit_code == 0, compared.output
    assert "request throughput req/s" in compared.output and "mean TTFT ms" in compared.output


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
async def test_against_the_shared_fake_engine(endpoint):
    """The project's fake engine (tests/fakes) speaks the same stream: usage, chunks, [DONE]."""
    from tests.fakes.engine import Behaviour, FakeEngine
    from tests.fakes.server import serve_app

    engine = FakeEngine(behaviour=Behaviour(ttft_s=0.005, itl_s=0.001))
    async with serve_app(engine) as url:
        base = settings(url, num_prompts=6, output_len=5)
        [level] = await run_benchmark(replace(base, target=replace(base.target, endpoint=endpoint)))
    m = level.metrics
    assert (m.completed, m.failed, m.total_output_tokens) == (6, 0, 30)
    assert m.output_tokens_sources == {"usage": 6}
    assert m.distributions["ttft"] is not None and m.distributions["ttft"].median_ms >= 5
