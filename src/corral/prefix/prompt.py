"""A request's prompt as the worker will see it, read leniently from the parsed body.

The router does not validate requests (the worker does, and answers the 400s); it only
needs the prompt to predict which prefix a worker can reuse. So these readers mirror the
worker's own reading (``corral.worker.schemas``: ``developer`` is ``system``, text parts
are joined, ``None`` content is empty) and give up -- return ``None`` -- on anything the
worker would refuse or that they cannot mirror exactly (tool calls, images, batches).

``canonical_text`` serializes ALL of a prompt (every message, not just the first one:
SGLang #26263) so that a prompt extending another one serializes to an extension of its
text; the approximate policy hashes it in character blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Separators that cannot be confused with message text in the canonical form.
_FIELD = "\x1f"
_RECORD = "\x1e"

Message = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """Chat messages, normalized as the worker hands them to the chat template."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class TextPrompt:
    """A completion prompt; the worker tokenizes it with BOS where the vocabulary wants one."""

    text: str


@dataclass(frozen=True, slots=True)
class TokenPrompt:
    """A completion prompt given as token ids: the worker uses them as they are."""

    tokens: tuple[int, ...]


Prompt = ChatPrompt | TextPrompt | TokenPrompt


def read_prompt(path: str, body: Mapping[str, Any]) -> Prompt | None:
    """The prompt of a chat or text completion request, or None if it cannot be mirrored."""
    if path == "/v1/chat/completions":
        return _chat(body.get("messages"))
    if path == "/v1/completions":
        return _completion(body.get("prompt"))
    return None


def canonical_text(prompt: Prompt) -> str:
    """Every message's role and content, in order; an extended prompt extends the text."""
    if isinstance(prompt, TextPrompt):
        return prompt.text
    if isinstance(prompt, TokenPrompt):
        return "".join(f"{token}," for token in prompt.tokens)
    return "".join(canonical_records(prompt))


def canonical_records(prompt: ChatPrompt) -> list[str]:
    """:func:`canonical_text` of a chat prompt, one string per message."""
    return [f"{message['role']}{_FIELD}{message['content']}{_RECORD}" for message in prompt.messages]


def _chat(messages: Any) -> ChatPrompt | None:
    if not isinstance(messages, list) or not messages:
        return None
    normalized: list[Message] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("tool_calls"):
            return None
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            return None  # tool messages and unknown roles: the worker refuses them
        content = _content(message.get("content"))
        if content is None:
            return None
        normalized.append({"role": "system" if role == "developer" else role, "content": content})
    return ChatPrompt(tuple(normalized))


def _content(content: Any) -> str | None:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        texts.append(text)
    return "".join(texts)


def _completion(prompt: Any) -> TextPrompt | TokenPrompt | None:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a one-element batch is one prompt
    if isinstance(prompt, str):
        return TextPrompt(prompt)
    if isinstance(prompt, list) and prompt and _all_ints(prompt):
        return TokenPrompt(tuple(prompt))
    return None


def _all_ints(values: Sequence[Any]) -> bool:
    return all(type(value) is int for value in values)
