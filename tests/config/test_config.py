from pathlib import Path

import pytest

from corral.config import dump_stack, load_stack, parse_stack
from corral.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _model(**overrides):
    model = {"name": "m", "task": "chat", "engine": "llamacpp", "source": "smollm2-135m-instruct"}
    model.update(overrides)
    return model


def test_default_stack_is_the_example_file():
    assert load_stack() == load_stack(REPO / "examples" / "stack.yaml")


def test_default_stack_serves_three_tasks():
    stack = load_stack()
    by_task = {m.task: m for m in stack.models}
    assert set(by_task) == {"chat", "completion", "embedding"}
    assert by_task["chat"].replicas == 2 and by_task["chat"].threads == 1
    assert by_task["embedding"].engine == "onnx-embed"
    assert stack.router.port == 8000


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (_model(replicas=-1), "models[0] (m).replicas: Input should be greater than or equal to 0 (got -1)"),
        (_model(threads="many"), "models[0] (m).threads: Input should be a valid integer"),
        (_model(task="rerank"), "models[0] (m).task: Input should be 'chat', 'completion' or 'embedding' (got 'rerank')"),
        (_model(engine="onnx-embed"), "engine 'onnx-embed' cannot serve task 'chat'"),
        (_model(engine="vllm"), "engine 'vllm' is not started by corral on this machine"),
        (_model(replicas=0), "replicas is 0 and no endpoints are given"),
        (_model(endpoints=["ftp://x"]), "endpoint 'ftp://x' is not an http(s) URL"),
        (_model(name="bad name"), "models[0] (bad name).name: must be 1-128 characters"),
        (_model(colour="blue"), "models[0] (m).colour: Extra inputs are not permitted"),
    ],
)
def test_bad_model_names_field_and_value(model, expected):
    with pytest.raises(ConfigError) as info:
        parse_stack({"models": [model]}, origin="s.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("s.yaml: invalid stack file")


def test_duplicate_names_across_models_are_rejected():
    with pytest.raises(ConfigError, match="name 'x' of model 'b' is already used by model 'a'"):
        parse_stack({"models": [_model(name="a", aliases=["x"]), _model(name="b", aliases=["x"])]})


def test_empty_and_non_mapping_documents():
    with pytest.raises(ConfigError, match="serves no model"):
        parse_stack({"models": []})
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_stack(["models"])


def test_yaml_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_stack(bad)
    with pytest.raises(ConfigError, match="cannot read stack file"):
        load_stack(tmp_path / "missing.yaml")


def test_vllm_model_with_external_endpoints_is_valid():
    stack = parse_stack({"models": [_model(engine="vllm", replicas=0, endpoints=["http://127.0.0.1:9000/"])]})
    assert stack.models[0].endpoints == ("http://127.0.0.1:9000",)


def test_dump_round_trips():
    stack = load_stack()
    assert parse_stack(__import__("yaml").safe_load(dump_stack(stack))) == stack


def test_lookup_by_alias():
    stack = load_stack()
    assert stack.model("chat").name == "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match="no model named 'nope'"):
        stack.model("nope")
