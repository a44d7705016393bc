"""Message-by-message rendering equals the template's own, or is not used."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest

from corral.prefix.rendering import MessageRenderer
from corral.prefix.vocab import GgufVocab
from corral.sources import resolve_source
from corral.worker.chat_template import ChatTemplate

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Gemma-style: the system prompt is folded into the first user turn.
FOLDED = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\\n' %}"
    "{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}"
    "{% for m in rest %}<turn {{ m['role'] }}>{% if loop.first %}{{ sys }}{% endif %}{{ m['content'] }}</turn>"
    "{% endfor %}{% if add_generation_prompt %}<turn assistant>{% endif %}"
)
NUMBERED = "{% for m in messages %}[{{ loop.index }}/{{ messages|length }}] {{ m['content'] }}\n{% endfor %}"
# QwQ-style: earlier assistant turns lose their reasoning.
REASONING = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
    "{{ '<a>' + m['content'].split('</think>')[-1] + '</a>' }}"
    "{% else %}{{ '<' + m['role'] + '>' + m['content'] + '</' + m['role'] + '>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<a>{% endif %}"
)
# No generation prompt after an assistant turn (the client asks to continue it).
CONTINUING = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}<gen>{% endif %}"
)
DATED = "Today {{ strftime_now('%d %b') }}\n" + CHATML


class CountingTemplate(ChatTemplate):
    """A real template that counts its renders."""

    renders = 0

    def render(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
        self.renders += 1
        return super().render(messages, add_generation_prompt=add_generation_prompt)


def template(source: str) -> CountingTemplate:
    return CountingTemplate(source, bos_token="<s>", eos_token="</s>")


def conversations(seed: int, count: int) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    alphabet = "ab é😀\n\t <>|{}%"
    return [
        [{"role": rng.choice(["system", "user", "assistant"]),
          "content": "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))}
         for _ in range(rng.randrange(1, 9))]
        for _ in range(count)
    ]


@pytest.mark.parametrize("source", [CHATML, FOLDED, NUMBERED, REASONING, CONTINUING])
def test_rendering_always_equals_the_template(source: str) -> None:
    chat = template(source)
    renderer = MessageRenderer(chat)
    for messages in conversations(1, 300):
        assert renderer.render(messages) == chat.render(messages)


def test_only_templates_that_render_messages_alone_are_separable() -> None:
    assert MessageRenderer(template(CHATML)).separable
    assert not MessageRenderer(template(FOLDED)).separable
    assert not MessageRenderer(template(NUMBERED)).separable
    assert not MessageRenderer(template(REASONING)).separable
    assert not MessageRenderer(template(DATED)).separable  # a cached piece would keep yesterday's date


def test_a_conversation_ending_with_an_assistant_turn_is_rendered_whole() -> None:
    chat = template(CONTINUING)
    renderer = MessageRenderer(chat)
    assert renderer.separable
    messages = [{"role": "user", "content": "Write a haiku."}, {"role": "assistant", "content": "Autumn"}]
    assert renderer.render(messages) == chat.render(messages) == "<user>Write a haiku.<assistant>Autumn"


@pytest.mark.slow
def test_the_packaged_chat_model_template_is_separable() -> None:
    vocab = GgufVocab(resolve_source("smollm2-135m-instruct").weights)
    try:
        chat = ChatTemplate(vocab.chat_template, bos_token=vocab.text(vocab.bos), eos_token=vocab.text(vocab.eos))
    finally:
        vocab.close()
    renderer = MessageRenderer(chat)
    assert renderer.separable
    for messages in conversations(2, 200):
        assert renderer.render(messages) == chat.render(messages)


def test_a_conversation_resent_with_a_new_turn_renders_only_that_turn() -> None:
    chat = template(CHATML)
    renderer = MessageRenderer(chat)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(6)]
    renderer.render(turns[:5])
    before = chat.renders
    assert renderer.render(turns) == chat.render(turns)
    assert chat.renders - before == 1 + 1  # the new turn's piece, then the comparison's own render


def test_the_piece_cache_stays_within_its_bound() -> None:
    renderer = MessageRenderer(template(CHATML), max_bytes=20_000)
    for number in range(500):
        renderer.render([{"role": "user", "content": f"{number} " + "x" * 100}])
    assert renderer._bytes <= 20_000
