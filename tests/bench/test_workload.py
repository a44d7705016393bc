"""Workload shapes, exact prompt lengths, determinism, and arrivals against their statistics."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import orjson
import pytest

from corral.bench.runner import Target, prompt_text, request_body
from corral.bench.text import FitJob, fit_texts
from corral.bench.tokens import ApproxCounter
from corral.bench.workload import (
    WorkloadSpec,
    arrival_offsets,
    build_workload,
    open_arrivals,
    warmup_spec,
)


class WordCounter:
    """An exact tokenizer for tests: one token per whitespace-separated word."""

    name = "server"

    def __init__(self) -> None:
        self.calls = 0

    async def count(self, texts: Sequence[str]) -> list[int]:
        self.calls += len(texts)
        return [len(t.split()) for t in texts]


def words(text: str) -> int:
    return len(text.split())


# -- arrivals: seeded, so deterministic; tolerances are several standard errors wide ----------


def _gaps(n: int, rate: float, burstiness: float, seed: int = 7) -> np.ndarray:
    return np.diff(arrival_offsets(n, rate, burstiness, np.random.default_rng(seed)), prepend=0.0)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_arrivals_have_the_requested_rate_and_burstiness(burstiness):
    n, rate = 4000, 50.0
    offsets = arrival_offsets(n, rate, burstiness, np.random.default_rng(7))
    assert offsets[-1] == pytest.approx(n / rate)  # scaled like vLLM: offered rate is exact
    gaps = _gaps(n, rate, burstiness)
    assert gaps.mean() == pytest.approx(1 / rate, rel=1e-9)
    # gamma(shape=k): coefficient of variation 1/sqrt(k): 2.0, 1.0, 0.5
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.1)


def test_poisson_arrivals_count_like_poisson():
    offsets = arrival_offsets(5000, 100.0, 1.0, np.random.default_rng(3))
    per_100ms = np.bincount((offsets / 0.1).astype(int))[:-1]  # drop the partial last window
    assert per_100ms.mean() == pytest.approx(10, rel=0.05)
    assert per_100ms.var() / per_100ms.mean() == pytest.approx(1.0, abs=0.2)  # dispersion index


def test_arrivals_are_deterministic_for_a_seed_and_infinite_rate_is_all_at_once():
    a = arrival_offsets(100, 5.0, 1.0, np.random.default_rng(1))
    b = arrival_offsets(100, 5.0, 1.0, np.random.default_rng(1))
    c = arrival_offsets(100, 5.0, 1.0, np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) >= 0)
    assert np.array_equal(arrival_offsets(5, math.inf, 1.0, np.random.default_rng(1)), np.zeros(5))
    assert len(arrival_offsets(0, 5.0, 1.0, np.random.default_rng(1))) == 0


def test_open_arrivals_for_a_duration():
    offsets = open_arrivals(200.0, 1.0, np.random.default_rng(5), horizon_s=20.0)
    assert offsets.max() < 20.0
    assert len(offsets) / 20.0 == pytest.approx(200.0, rel=0.05)


# -- datasets --------------------------------------------------------------------------------


async def test_random_prompts_have_exact_lengths_within_the_range():
    spec = WorkloadSpec("random", num_prompts=200, input_len=100, output_len=20, range_ratio=0.5, seed=1)
    w = await build_workload(spec, WordCounter())
    assert w.num_requests == 200 and w.counter == "server"
    for conv in w.conversations:
        [turn] = conv.turns
        assert turn.prompt_len == words(turn.text)
        assert 50 <= turn.prompt_len <= 150 and 10 <= turn.output_len <= 30
    lens = [c.turns[0].prompt_len for c in w.conversations]
    assert len(set(lens)) > 50  # spread over the range
    assert len({c.turns[0].text for c in w.conversations}) == 200  # no accidental prefix sharing


async def test_random_with_a_shared_prefix_and_fixed_lengths():
    w = await build_workload(WorkloadSpec("random", 10, 30, 5, prefix_len=40), WordCounter())
    prefixes = {" ".join(c.turns[0].text.split()[:40]) for c in w.conversations}
    assert len(prefixes) == 1
    assert {c.turns[0].prompt_len for c in w.conversations} == {70}
    assert {c.turns[0].output_len for c in w.conversations} == {5}


async def test_workloads_are_deterministic_for_a_seed():
    spec = WorkloadSpec("random", 20, 50, 10, range_ratio=0.3, seed=9)
    a, b = await build_workload(spec, WordCounter()), await build_workload(spec, WordCounter())
    c = await build_workload(replace(spec, seed=10), WordCounter())
    assert a == b and a != c


async def test_prefix_repetition_shape():
    spec = WorkloadSpec("prefix-repetition", num_prompts=40, input_len=8, output_len=4, prefix_len=30, num_prefixes=4)
    w = await build_workload(spec, WordCounter())
    prefixes = Counter(" ".join(c.turns[0].text.split()[:30]) for c in w.conversations)
    assert len(prefixes) == 4 and set(prefixes.values()) == {10}
    assert {c.turns[0].prompt_len for c in w.conversations} == {38}
    suffixes = {" ".join(c.turns[0].text.split()[30:]) for c in w.conversations}
    assert len(suffixes) == 40


async def test_multi_round_qa_shape():
    spec = WorkloadSpec("multi-round-qa", input_len=6, output_len=3, prefix_len=20,
                        num_users=3, num_rounds=4, history_len=12, think_time_s=0.5)
    w = await build_workload(spec, WordCounter())
    assert len(w.conversations) == 3 and w.num_requests == 12
    systems = {c.system for c in w.conversations}
    assert len(systems) == 1 and words(next(iter(systems))) == 20  # shared system prompt
    histories = [c.turns[0].text.split("\n\n")[0] for c in w.conversations]
    assert len(set(histories)) == 3 and all(words(h) == 12 for h in histories)  # one per user
    for conv in w.conversations:
        assert len(conv.turns) == 4 and conv.think_time_s == 0.5
        assert all(t.prompt_len is None for t in conv.turns)  # depends on the answers
        assert [words(t.text) for t in conv.turns[1:]] == [6, 6, 6]
        assert {t.output_len for t in conv.turns} == {3}
    assert [c.user for c in w.conversations] == ["bench-user-0", "bench-user-1", "bench-user-2"]


def test_multi_round_history_grows_in_the_request_body():
    from corral.bench.workload import Conversation, Turn

    conv = Conversation((Turn("q1", 4), Turn("q2", 4)), system="sys", user="u1")
    chat = orjson.loads(request_body(Target("http://x/v1", "m"), conv, ["q1", "a1"], conv.turns[1]))
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in chat["messages"]] == ["sys", "q1", "a1", "q2"]
    assert chat["stream"] and chat["stream_options"] == {"include_usage": True}
    assert (chat["max_tokens"], chat["user"], chat["model"]) == (4, "u1", "m")
    plain = orjson.loads(request_body(Target("http://x/v1", "m", "completions", ignore_eos=True), conv, ["q1", "a1"], conv.turns[1]))
    assert plain["prompt"] == "sys\n\nq1\n\na1\n\nq2" == prompt_text(conv, ["q1", "a1"], conv.turns[1])
    assert plain["ignore_eos"] is True and "messages" not in plain


async def test_sharegpt(tmp_path):
    def pair(human: str, gpt: str) -> dict[str, object]:
        return {"conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}

    data = [pair("a b c d e", "one two three four five six"), pair("hi", "too short prompt"),
            {"conversations": [{"from": "human", "value": "lonely"}]}, pair("w " * 1100, "x y z w")]
    path = tmp_path / "sg.json"
    path.write_bytes(orjson.dumps(data))
    w = await build_workload(WorkloadSpec("sharegpt", num_prompts=3, dataset_path=str(path)), WordCounter())
    # only the first pair passes vLLM's filter; it is repeated to reach --num-prompts
    assert [(c.turns[0].prompt_len, c.turns[0].output_len) for c in w.conversations] == [(5, 6)] * 3
    fixed = await build_workload(WorkloadSpec("sharegpt", 1, output_len=9, dataset_path=str(path)), WordCounter())
    assert fixed.conversations[0].turns[0].output_len == 9


async def test_custom_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "one two three"}\n\n{"prompt": "four five", "output_len": 7}\n')
    w = await build_workload(WorkloadSpec("custom", num_prompts=4, dataset_path=str(path), seed=2), WordCounter())
    shapes = Counter((c.turns[0].prompt_len, c.turns[0].output_len) for c in w.conversations)
    assert shapes == Counter({(3, 256): 2, (2, 7): 2})


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"prompt": 3}', "line 1 has no string 'prompt'"), ("not json", "line 1 is not JSON"), ("", "has no prompts"),
     ('{"prompt": "a", "output_len": 0}', "output_len must be an integer")],
)
async def test_custom_errors_name_the_option(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"--dataset-path: .*{message}"):
        await build_workload(WorkloadSpec("custom", dataset_path=str(path)), WordCounter())


async def test_missing_file_names_the_option(tmp_path):
    with pytest.raises(ValueError, match="--dataset-path: cannot read"):
        await build_workload(WorkloadSpec("sharegpt", dataset_path=str(tmp_path / "nope.json")), WordCounter())


async def test_warmup_requests_share_nothing_with_measured_ones():
    spec = WorkloadSpec("multi-round-qa", num_users=4, num_rounds=3, prefix_len=10, history_len=5)
    warm = await build_workload(warmup_spec(spec, 2), WordCounter())
    real = await build_workload(spec, WordCounter())
    assert warm.num_requests == 2 and all(len(c.turns) == 1 for c in warm.conversations)
    assert warm.conversations[0].system != real.conversations[0].system


async def test_approximate_counting_is_close():
    w = await build_workload(WorkloadSpec("random", 20, 200, 8, seed=4), ApproxCounter())
    assert w.counter == "approx"
    for conv in w.conversations:
        assert conv.turns[0].prompt_len == pytest.approx(200, abs=2)
        assert words(conv.turns[0].text) == pytest.approx(200, rel=0.25)  # ~1 word per token


async def test_fit_keeps_the_closest_when_the_target_is_unreachable():
    class Pairs:  # every two words merge into one token: odd targets cannot be hit
        name = "server"

        async def count(self, texts: Sequence[str]) -> list[int]:
            return [(words(t) + 1) // 2 for t in texts]

    [(text, count)] = await fit_texts(Pairs(), [FitJob(["w"] * 40, 7)])
    assert count == 7 and words(text) in (13, 14)
    [(_, count)] = await fit_texts(Pairs(), [FitJob(["w"] * 4, 7)])
    assert count == 2  # the pool ran out: the closest reachable count is reported
