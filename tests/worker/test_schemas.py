from typing import Any

import pytest

from corral.errors import InvalidRequestError, UnsupportedParameterError
from corral.worker.engine import ChatPrompt, SamplingParams
from corral.worker.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    TokenizeRequest,
    parse,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def chat(**fields: Any) -> ChatCompletionRequest:
    return parse(ChatCompletionRequest, {**CHAT, **fields})


def test_defaults_follow_openai() -> None:
    params = chat().sampling_params()
    assert params == SamplingParams(max_tokens=None, temperature=1.0, top_p=1.0, stop=())


def test_sampling_fields_are_carried_over() -> None:
    params = chat(
        temperature=0, top_p=0.5, seed=7, max_tokens=9, stop="END", top_k=-1, ignore_eos=True
    ).sampling_params()
    assert (params.temperature, params.top_p, params.seed, params.max_tokens) == (0, 0.5, 7, 9)
    assert params.stop == ("END",) and params.top_k == 0 and params.ignore_eos


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert chat(max_tokens=5, max_completion_tokens=3).sampling_params().max_tokens == 3


def test_stop_list_drops_empty_strings() -> None:
    assert chat(stop=["a", "", "b"]).sampling_params().stop == ("a", "b")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"seed": 1.5}, "seed"),
        ({"stop": 3}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"model": None}, "model"),
    ],
)
def test_bad_values_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        chat(**fields)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert f"'{param}" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
    ],
)
def test_unsupported_chat_parameters_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        chat(**fields).check_supported()
    assert caught.value.param == param
    assert caught.value.status == 400


def test_harmless_values_of_unsupported_parameters_pass() -> None:
    chat(
        n=1,
        logprobs=False,
        tools=[],
        tool_choice="none",
        response_format={"type": "text"},
        logit_bias={},
    ).check_supported()


def test_unknown_fields_are_ignored() -> None:
    chat(store=False, metadata={"a": "b"}, parallel_tool_calls=False).check_supported()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"echo": True}, "echo"),
        ({"suffix": "x"}, "suffix"),
        ({"best_of": 2}, "best_of"),
        ({"logprobs": 1}, "logprobs"),
    ],
)
def test_unsupported_completion_parameters_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        parse(CompletionRequest, {"model": "m", "prompt": "x", **fields}).check_supported()
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("text", "text"), ([1, 2], [1, 2]), (["text"], "text"), ([[3, 4]], [3, 4])],
)
def test_one_prompt_in_any_shape(prompt: Any, expected: Any) -> None:
    assert parse(CompletionRequest, {"model": "m", "prompt": prompt}).single_prompt() == expected


def test_a_batch_of_prompts_is_refused() -> None:
    with pytest.raises(UnsupportedParameterError, match="one prompt"):
        parse(CompletionRequest, {"model": "m", "prompt": ["a", "b"]}).single_prompt()


def test_chat_messages_become_template_messages() -> None:
    body = chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None},
        ]
    )
    assert body.prompt() == ChatPrompt(
        (
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "ab"},
            {"role": "assistant", "content": ""},
        )
    )


def test_image_parts_and_tool_messages_are_refused() -> None:
    with pytest.raises(UnsupportedParameterError, match="text content"):
        chat(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ).prompt()
    with pytest.raises(UnsupportedParameterError, match="tool"):
        chat(messages=[{"role": "tool", "content": "x"}]).prompt()


def test_embedding_inputs() -> None:
    def inputs(value: Any) -> Any:
        return parse(EmbeddingRequest, {"model": "m", "input": value}).inputs()

    assert inputs("a") == ["a"]
    assert inputs(["a", "b"]) == ["a", "b"]
    assert inputs([1, 2]) == [[1, 2]]
    assert inputs([[1], [2]]) == [[1], [2]]
    with pytest.raises(InvalidRequestError):
        inputs([])


def test_tokenize_takes_exactly_one_of_prompt_and_messages() -> None:
    assert parse(TokenizeRequest, {"prompt": "x"}).tokenizable() == "x"
    with pytest.raises(InvalidRequestError, match="exactly one"):
        parse(TokenizeRequest, {}).tokenizable()
    prompt = parse(
        TokenizeRequest,
        {"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": False},
    )
    assert prompt.tokenizable() == ChatPrompt(
        ({"role": "user", "content": "x"},), add_generation_prompt=False
    )
