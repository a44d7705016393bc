"""`corral bench` rejects bad input with an error that names the option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from corral.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--model is required"),
        (["-m", "x", "--slo", "ttft=abc"], "--slo: 'ttft=abc': 'abc' is not a number of milliseconds"),
        (["-m", "x", "--slo", "speed=3"], "--slo: 'speed=3' is not NAME=MS"),
        (["-m", "x", "--sweep", "rate=1,fast"], "--sweep: 'fast' is not a number"),
        (["-m", "x", "--sweep", "rate=1", "--request-rate", "3"], "--request-rate: cannot be combined"),
        (["-m", "x", "--sweep", "concurrency=2", "--max-concurrency", "3"], "--max-concurrency: cannot be combined"),
        (["-m", "x", "--percentiles", "50,abc"], "--percentiles:"),
        (["-m", "x", "--percentiles", "100"], "--percentiles:"),
        (["-m", "x", "--range-ratio", "1"], "--range-ratio: 1.0 must be >= 0 and < 1"),
        (["-m", "x", "--request-rate", "0"], "--request-rate: 0.0 must be > 0"),
        (["-m", "x", "--burstiness", "0"], "--burstiness:"),
        (["-m", "x", "--duration", "5"], "--duration: with --request-rate inf, give --max-concurrency"),
        (["-m", "x", "--dataset", "sharegpt"], "--dataset-path: the sharegpt dataset reads a local file"),
        (["-m", "x", "--dataset", "multi-round-qa", "--num-prompts", "5"], "--num-prompts: multi-round-qa sends"),
        (["-m", "x", "--base-url", "127.0.0.1:8000"], "--base-url: '127.0.0.1:8000' is not an http(s) URL"),
        (["-m", "x", "--num-prompts", "0"], "--num-prompts"),
        (["-m", "x", "--dataset", "nope"], "--dataset"),
        (["-m", "x", "--keep-up", "2", "--sweep", "rate=1"], "--keep-up"),
    ],
)
def test_bad_input_names_the_option(args, message):
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_unreachable_server_fails_clearly():
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    result = runner.invoke(app, ["bench", "-m", "x", "--base-url", "http://127.0.0.1:9", "--num-prompts", "1"])
    assert result.exit_code == 2
    assert "--base-url/--model: the check request to http://127.0.0.1:9/v1/chat/completions failed (connect" in " ".join(result.output.split())


def test_compare_needs_results(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    result = runner.invoke(app, ["bench", "compare", str(bad), str(bad)])
    assert result.exit_code == 2 and "is not a corral bench" in " ".join(result.output.split())
    assert runner.invoke(app, ["bench", "compare", str(tmp_path / "missing.json"), str(bad)]).exit_code == 2
