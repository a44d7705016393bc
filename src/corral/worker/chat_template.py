"""The model's own chat template (``tokenizer.chat_template`` in the GGUF metadata).

Rendered with llama-cpp-python's Jinja2ChatFormatter, which runs templates the way
Hugging Face transformers does (sandboxed Jinja, ``tojson``, ``raise_exception``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jinja2
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from corral.errors import InvalidRequestError

TEMPLATE_KEY = "tokenizer.chat_template"


class ChatTemplate:
    """Messages -> prompt text, with the model's BOS and EOS token texts."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        self.source = template
        self.bos_token = bos_token
        # One formatter per value of add_generation_prompt, compiled once.
        self._formatters = {
            flag: Jinja2ChatFormatter(
                template=template,
                eos_token=eos_token,
                bos_token=bos_token,
                add_generation_prompt=flag,
            )
            for flag in (True, False)
        }

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, str], *, bos_token: str, eos_token: str
    ) -> ChatTemplate | None:
        template = metadata.get(TEMPLATE_KEY)
        return None if not template else cls(template, bos_token=bos_token, eos_token=eos_token)

    def parse(self) -> jinja2.nodes.Template:
        """The template's syntax tree, parsed as it is rendered (same environment)."""
        return self._formatters[True]._environment.environment.parse(self.source)

    def render(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        formatter = self._formatters[add_generation_prompt]
        try:
            return formatter(messages=[dict(message) for message in messages]).prompt  # type: ignore[misc]
        except (ValueError, TypeError, jinja2.TemplateError) as exc:
            raise InvalidRequestError(
                f"the model's chat template cannot render these messages: {exc}", param="messages"
            ) from None
