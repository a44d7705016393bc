"""The CLI as a user calls it (typer's runner, captured output)."""

from typer.testing import CliRunner

from corral import __version__
from corral.cli.main import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"corral {__version__}"


def test_models_lists_the_default_stack():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("smollm2-135m-instruct", "gemma3-270m", "minilm-l6-v2"):
        assert name in result.output


def test_a_bad_stack_file_names_the_field(tmp_path):
    bad = tmp_path / "stack.yaml"
    bad.write_text("models:\n  - {name: m, task: chat, engine: llamacpp, source: x, threads: 0}\n")
    result = runner.invoke(app, ["models", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "models[0] (m).threads" in result.output and "(got 0)" in result.output


def test_up_refuses_a_bad_stack_before_starting_anything(tmp_path):
    bad = tmp_path / "stack.yaml"
    bad.write_text("models: []\n")
    result = runner.invoke(app, ["up", str(bad), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "serves no model" in result.output
    assert not (tmp_path / "run").exists()


def test_observability_writes_prometheus_rules_and_dashboards(tmp_path):
    result = runner.invoke(app, ["observability", "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert (tmp_path / "prometheus.yml").exists() and (tmp_path / "corral-rules.yml").exists()
    assert len(list((tmp_path / "grafana" / "dashboards").glob("*.json"))) == 4


def test_top_names_the_url_it_cannot_read():
    result = runner.invoke(app, ["top", "--url", "http://127.0.0.1:9", "--once"])
    assert result.exit_code == 2 and "--url" in result.output
