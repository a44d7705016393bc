"""Reading a request's prompt as the worker will see it, and its canonical text."""

from __future__ import annotations

from typing import Any

import pytest

from corral.prefix.prompt import (
    ChatPrompt,
    TextPrompt,
    TokenPrompt,
    canonical_text,
    read_prompt,
)
from corral.worker.schemas import ChatCompletionRequest, CompletionRequest

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"

MESSAGES: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "hi"}],
    [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
    [{"role": "system", "content": None}, {"role": "user", "content": ""}],
    [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c", "name": "bot"},
    ],
]


@pytest.mark.parametrize("messages", MESSAGES)
def test_chat_messages_read_as_the_worker_reads_them(messages: list[dict[str, Any]]) -> None:
    worker = ChatCompletionRequest.model_validate({"model": "m", "messages": messages}).prompt()
    assert read_prompt(CHAT, {"messages": messages}) == ChatPrompt(worker.messages)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hi",
        [{"role": "tool", "content": "x"}],
        [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [{"role": "user", "content": 3}],
        ["not a message"],
    ],
)
def test_chats_the_worker_refuses_give_no_prompt(messages: Any) -> None:
    assert read_prompt(CHAT, {"messages": messages}) is None


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("once upon", TextPrompt("once upon")),
        (["once upon"], TextPrompt("once upon")),
        ([1, 2, 3], TokenPrompt((1, 2, 3))),
        ([[1, 2, 3]], TokenPrompt((1, 2, 3))),
        (["a", "b"], None),
        ([], None),
        (None, None),
        ([1, "x"], None),
    ],
)
def test_completion_prompts(prompt: Any, expected: Any) -> None:
    assert read_prompt(TEXT, {"prompt": prompt}) == expected
    if expected is not None:
        worker = CompletionRequest.model_validate({"model": "m", "prompt": prompt}).single_prompt()
        assert worker == (
            expected.text if isinstance(expected, TextPrompt) else list(expected.tokens)
        )


def test_embeddings_have_no_prompt_prefix() -> None:
    assert read_prompt("/v1/embeddings", {"input": "hi"}) is None


def test_canonical_text_covers_every_message_and_extends_with_the_conversation() -> None:
    first = ChatPrompt(({"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}))
    longer = ChatPrompt((*first.messages, {"role": "assistant", "content": "A1"}))
    other = ChatPrompt(({"role": "system", "content": "S"}, {"role": "user", "content": "Q2"}))
    assert canonical_text(longer).startswith(canonical_text(first))
    assert canonical_text(other) != canonical_text(first)  # not just the first message
    # Roles are part of the text: the same words said by another role differ.
    swapped = ChatPrompt(({"role": "user", "content": "S"}, {"role": "user", "content": "Q1"}))
    assert canonical_text(swapped) != canonical_text(first)
    assert canonical_text(TokenPrompt((1, 23))) == "1,23,"
