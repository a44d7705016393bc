"""The OpenAI request bodies the worker accepts, validated with pydantic (strict types).

Unknown fields are ignored, as OpenAI clients send new ones all the time. Known
parameters the worker does not implement are refused with a 400 that names them
(:class:`~corral.errors.UnsupportedParameterError`) rather than silently ignored.
A few vLLM extensions are accepted: ``top_k``, ``min_p``, ``repetition_penalty``,
``ignore_eos``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.errors import InvalidRequestError, UnsupportedParameterError
from corral.worker.engine import ChatPrompt, SamplingParams

Model = TypeVar("Model", bound=BaseModel)

#: What a field that accepts several shapes expects, for error messages.
_EXPECTED: dict[str, str] = {
    "stop": "must be a string or a list of strings",
    "prompt": "must be a string, a list of token ids, or a one-element list of either",
    "input": "must be a string, a list of strings, a list of token ids, or a list of token id lists",
    "content": "must be a string or a list of text parts",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class ModelOnly(_Body):
    """Just the model name: enough to answer an endpoint the model's task cannot serve."""

    model: str


class StreamOptions(_Body):
    include_usage: bool = False


class SamplingRequest(_Body):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=2)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool | None = False
    user: str | None = None
    n: int | None = None
    logit_bias: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, max_tokens: int | None = None) -> SamplingParams:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=max_tokens if max_tokens is not None else self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=max(self.top_k or 0, 0),
            min_p=self.min_p or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=self.repetition_penalty or 1.0,
            seed=self.seed,
            stop=tuple(stop for stop in stops if stop),
            ignore_eos=bool(self.ignore_eos),
        )

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise UnsupportedParameterError("n", "this worker returns one choice per request (n=1)")
        if self.logit_bias:
            raise UnsupportedParameterError("logit_bias", "it is not implemented")


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None

    def as_template_message(self, index: int) -> dict[str, str]:
        where = f"messages[{index}]"
        if self.role == "tool" or self.tool_calls:
            raise UnsupportedParameterError(where, "tool messages and tool calls are not supported")
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": _text_content(self.content, where)}


def _text_content(content: str | list[dict[str, Any]] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise UnsupportedParameterError(
                f"{where}.content", "only text content parts are supported"
            )
        texts.append(part["text"])
    return "".join(texts)


class ChatCompletionRequest(SamplingRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs or self.top_logprobs:
            raise UnsupportedParameterError("logprobs", "log probabilities are not returned")
        for name in ("tools", "functions", "function_call"):
            if getattr(self, name):
                raise UnsupportedParameterError(name, "tool and function calling is not supported")
        if self.tool_choice not in (None, "none"):
            raise UnsupportedParameterError(
                "tool_choice", "tool and function calling is not supported"
            )
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise UnsupportedParameterError("response_format", "only {'type': 'text'} is supported")

    def prompt(self) -> ChatPrompt:
        return ChatPrompt(tuple(m.as_template_message(i) for i, m in enumerate(self.messages)))

    def sampling_params(self, max_tokens: int | None = None) -> SamplingParams:
        return super().sampling_params(self.max_completion_tokens or max_tokens)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: int | None = None
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.best_of not in (None, 1):
            raise UnsupportedParameterError(
                "best_of", "this worker samples one sequence (best_of=1)"
            )
        if self.echo:
            raise UnsupportedParameterError("echo", "the prompt is not echoed back")
        if self.logprobs:
            raise UnsupportedParameterError("logprobs", "log probabilities are not returned")
        if self.suffix:
            raise UnsupportedParameterError(
                "suffix", "insertion (fill-in-the-middle) is not supported"
            )

    def single_prompt(self) -> str | list[int]:
        """The one prompt of this request: text or token ids."""
        prompt = self.prompt
        if not prompt and not isinstance(prompt, str):
            raise InvalidRequestError("'prompt' must not be an empty list", param="prompt")
        if isinstance(prompt, str) or isinstance(prompt[0], int):
            return prompt
        if len(prompt) != 1:
            raise UnsupportedParameterError("prompt", "give one prompt per request, not a batch")
        return prompt[0]


class EmbeddingRequest(_Body):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def inputs(self) -> list[str] | list[list[int]]:
        given = self.input
        if isinstance(given, str):
            return [given]
        if not given:
            raise InvalidRequestError("'input' must not be empty", param="input")
        if isinstance(given[0], int):
            return [given]
        if len(given) > 2048:
            raise InvalidRequestError("'input' may hold at most 2048 items", param="input")
        return given


class TokenizeRequest(_Body):
    """vLLM's /tokenize: a prompt, or chat messages rendered with the template."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True

    def tokenizable(self) -> str | ChatPrompt:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequestError("give exactly one of 'prompt' and 'messages'", param="prompt")
        if self.messages is not None:
            messages = tuple(m.as_template_message(i) for i, m in enumerate(self.messages))
            return ChatPrompt(messages, add_generation_prompt=self.add_generation_prompt)
        return self.prompt or ""


class DetokenizeRequest(_Body):
    model: str | None = None
    tokens: list[int]


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    """Validate a parsed JSON body, or raise a 400 that names each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(error: ValidationError) -> InvalidRequestError:
    """One message per bad field; a field that accepts several shapes says which."""
    problems: dict[str, tuple[str, list[str]]] = {}
    for item in error.errors():
        where, name = _field_path(item["loc"])
        problems.setdefault(where, (name, []))[1].append(str(item["msg"]))
    parts = [
        f"'{where}': {messages[0] if len(messages) == 1 else _EXPECTED.get(name, 'has an invalid type or value')}"
        for where, (name, messages) in problems.items()
    ]
    first = next(iter(problems), "body")
    return InvalidRequestError(
        f"invalid request: {'; '.join(parts)}", param=first.split("[")[0].split(".")[0]
    )


def _field_path(loc: tuple[int | str, ...]) -> tuple[str, str]:
    """``('messages', 0, 'content', 'list[dict[str,any]]', 0)`` -> ``('messages[0].content', 'content')``:
    the path up to the first union branch that pydantic names in ``loc``."""
    path, name = "", "body"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in {"str", "int", "float", "bool", "dict", "list"}:
            break
        else:
            path += f".{part}" if path else part
            name = part
    return path or "body", name
