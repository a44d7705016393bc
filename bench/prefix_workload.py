"""Long-prompt chat workloads for the router benchmarks, and the KV blocks workers would hold.

``conversation``: ``sessions`` conversations, each a shared system prompt and its own
history, re-sent with one new question per request (multi-round QA as the router sees it:
everything but the new question was seen before). ``unique``: every prompt is new text
after the chat template's default system prompt (the worst case for the ``kv`` policy:
the first block is held somewhere, so the whole new message has to be tokenized).

:func:`held_blocks` is what the fake workers announce in their KV event snapshot: the
token blocks (seeded with the ``kv`` model's name) of each conversation's history followed
by an earlier question, as a corral worker that answered it would report them. Since a
block follows the history there, the router cannot stop before a new question without
looking at it: with the blocks' tokens in the events it compares the question's text with
the held continuation's; without them (``tokens`` dropped) it has to tokenize every new
question (the costly case of the ``kv`` policy).
"""

from __future__ import annotations

import random
from typing import Any

QUESTION_CHARS = 400
SYSTEM_CHARS = 1000
_WORDS = (
    "the router keeps each conversation near its cache while load stays even across "
    "workers and every prompt block is hashed once per request so that repeated "
    "context costs nothing to prefill again and new text is tokenized only once"
).split()


def text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


class Workload:
    """Request bodies (without ``model``) for one workload, deterministic by seed."""

    def __init__(self, kind: str, *, prompt_chars: int, sessions: int, seed: int) -> None:
        self.kind = kind
        self.prompt_chars = prompt_chars
        rng = random.Random(seed)
        self._rng = rng
        system = {"role": "system", "content": text(rng, SYSTEM_CHARS)}
        self.histories: list[list[dict[str, str]]] = []
        history_chars = max(0, prompt_chars - SYSTEM_CHARS - QUESTION_CHARS)
        for _ in range(sessions):
            history = [system]
            for turn in range(6):
                role = "user" if turn % 2 == 0 else "assistant"
                history.append({"role": role, "content": text(rng, history_chars // 6)})
            self.histories.append(history)
        self._count = 0
        # Texts drawn once (the load generator must stay cheap); the counter in front of
        # each makes every prompt unique all the same.
        size = self.prompt_chars if kind == "unique" else QUESTION_CHARS
        self._texts = [text(rng, size) for _ in range(64)]

    def messages(self) -> list[dict[str, str]]:
        self._count += 1
        body = self._texts[self._count % len(self._texts)]
        if self.kind == "unique":
            return [{"role": "user", "content": f"{self._count} {body}"}]
        if self.kind == "hello":
            return [{"role": "user", "content": "hello"}]
        history = self.histories[self._rng.randrange(len(self.histories))]
        return [*history, {"role": "user", "content": f"Question {self._count}: {body}"}]

    def body(self, model: str, *, stream: bool, max_tokens: int) -> dict[str, Any]:
        return {
            "model": model,
            "messages": self.messages(),
            "max_tokens": max_tokens,
            "stream": stream,
        }


def held_blocks(
    workload: Workload, *, source: str, model: str, block_size: int, engines: int
) -> list[list[dict[str, list[int]]]]:
    """Per engine, the chains it holds, each ``{"hashes": [...], "tokens": [...]}`` (the
    blocks' tokens, as a worker's KV events carry them): conversation ``i`` lives on engine
    ``i % engines`` (for ``unique``: every engine holds an earlier prompt after the
    template's default system prompt, so the first block of every unique prompt is held
    and followed)."""
    from corral.prefix.hashing import block_hashes
    from corral.prefix.tokenizer import PromptTokenizer

    tokenizer = PromptTokenizer.load(source, cache_bytes=0)
    try:
        assert tokenizer.template is not None, "the kv benchmark needs a chat model"
        held: list[list[dict[str, list[int]]]] = [[] for _ in range(engines)]

        def chain(messages: list[dict[str, str]]) -> dict[str, list[int]]:
            rendered = tokenizer.template.render(messages, add_generation_prompt=False)  # type: ignore[union-attr]
            tokens = tokenizer.vocab.tokenize(rendered, add_special=False)
            hashes = block_hashes(tokens, block_size=block_size, seed=model)
            return {"hashes": hashes, "tokens": list(tokens[: len(hashes) * block_size])}

        if workload.kind == "conversation":
            for number, history in enumerate(workload.histories):
                earlier = {
                    "role": "user",
                    "content": "An earlier question: "
                    + text(random.Random(number), QUESTION_CHARS),
                }
                held[number % engines].append(chain([*history, earlier]))
        else:
            earlier = {"role": "user", "content": text(random.Random(-1), QUESTION_CHARS)}
            for chains in held:
                chains.append(chain([earlier]))
        return held
    finally:
        tokenizer.close()
