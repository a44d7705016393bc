"""Message-by-message rendering equals the template's own, or is not used."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest

from corral.prefix.rendering import MessageRenderer, writes_content_verbatim
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
# Separable, but a content's beginning changes how it is written.
TRIGGERED = (
    "{% for m in messages %}{% if m['content'].startswith('/raw ') %}{{ '[raw]' + m['content'][5:] }}"
    "{% else %}{{ '<' + m['role'] + '>' + m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<gen>{% endif %}"
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


@pytest.mark.parametrize("source", [CHATML, FOLDED, NUMBERED, REASONING, CONTINUING, TRIGGERED])
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
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(7)]
    renderer.render(turns[:5])
    before = chat.renders
    assert renderer.render(turns) == chat.render(turns)
    # ChatML writes the content as it is: the new turn's piece needs no rendering at all
    assert chat.renders - before == 0 + 1  # only the comparison's own render

    chat = template(TRIGGERED)  # the content decides: every new turn is rendered
    renderer = MessageRenderer(chat)
    assert renderer.separable
    renderer.render(turns[:5])
    before = chat.renders
    assert renderer.render(turns) == chat.render(turns)
    assert chat.renders - before == 2 + 1  # the two new turns' pieces, then the comparison's
    raw = [{"role": "user", "content": "/raw keep me"}]
    assert renderer.render(raw) == chat.render(raw) == "[raw]keep me<gen>"


@pytest.mark.parametrize(
    ("source", "verbatim"),
    [
        (CHATML, True),
        ("{% for m in messages %}{{ '<' ~ m.role ~ '>' ~ m.content }}{% endfor %}", True),
        ("{% if messages|length > 1 %}-{% endif %}{% for m in messages[1:] %}{{ m.content }}{% endfor %}", True),
        ("{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}", True),
        ("{% for m in messages %}{{ m['content'] | trim }}{% endfor %}", False),
        ("{% for m in messages %}{{ m | tojson }}{% endfor %}", False),
        ("{% for m in messages %}{% set c = m['content'] %}{{ c }}{% endfor %}", False),
        ("{% for m in messages %}{% if '<think>' in m.content %}x{% endif %}{{ m.content }}{% endfor %}", False),
        ("{% for m in messages %}{{ m.get('content') }}{% endfor %}", False),
        ("{% for m in messages %}{% for k, v in m.items() %}{{ v }}{% endfor %}{% endfor %}", False),
        ("{% macro r(x) %}{{ x.content }}{% endmacro %}{% for m in messages %}{{ r(m) }}{% endfor %}", False),
        ("{% for m in messages %}{{ m.content if m.role == 'user' else 'x' }}{% endfor %}", False),
        ("{{ messages | map(attribute='content') | join('') }}", False),
        ("{% set ms = messages %}{% for m in ms %}{{ m.content | upper }}{% endfor %}", False),
        (REASONING, False),
        # captured by a block, then changed: never written as it is
        ("{% for m in messages %}{% set c %}{{ m['content'] }}{% endset %}{{ c | upper }}{% endfor %}", False),
        ("{% for m in messages %}{% filter replace('\t', ' ') %}{{ m['content'] }}{% endfilter %}{% endfor %}", False),
        ("{% macro w() %}{{ caller() | trim }}{% endmacro %}{% for m in messages %}{% call w() %}{{ m.content }}{% endcall %}{% endfor %}", False),
    ],
)
def test_content_is_taken_as_written_only_where_the_template_cannot_touch_it(
    source: str, verbatim: bool
) -> None:
    assert writes_content_verbatim(template(source).parse()) is verbatim


def test_the_piece_cache_stays_within_its_bound() -> None:
    renderer = MessageRenderer(template(CHATML), max_bytes=20_000)
    for number in range(500):
        renderer.render([{"role": "user", "content": f"{number} " + "x" * 100}])
    assert renderer._bytes <= 20_000
