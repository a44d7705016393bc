"""What a benchmark sends, and when: datasets as conversations, and arrival times.

Every dataset becomes a tuple of :class:`Conversation`; single-turn datasets have one turn
per conversation. Rounds of one conversation run in order (round r+1 is sent after the
answer of round r arrived and was appended to the history); arrivals start conversations.

    random             input/output lengths drawn uniformly in [len*(1-ratio), len*(1+ratio)],
                       an optional shared prefix (vLLM's `random`)
    prefix-repetition  --num-prefixes shared prefixes of --prefix-len tokens, each prompt one of
                       them plus a unique suffix of --input-len tokens (vLLM's `prefix_repetition`)
    multi-round-qa     --num-users users x --num-rounds rounds: a system prompt shared by all
                       (--prefix-len), a unique history per user (--history-len), a question of
                       --input-len tokens per round, answers of --output-len tokens
    sharegpt           first human turn -> prompt, first gpt turn's length -> max_tokens
    custom             JSONL lines {"prompt": str, "output_len": int (optional)}

Prompt lengths are exact when the counter is the server's /tokenize (see tokens.py).
Everything is deterministic for a seed and a counter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from corral.bench.datasets import load_custom, load_sharegpt
from corral.bench.text import FitJob, draw_words, fit_texts
from corral.bench.tokens import TokenCounter

DatasetName = Literal["random", "prefix-repetition", "multi-round-qa", "sharegpt", "custom"]
DATASETS: tuple[str, ...] = ("random", "prefix-repetition", "multi-round-qa", "sharegpt", "custom")

#: Warm-up requests come from the same generator under another seed: they warm the server and
#: the connections but share no prompt text with the measured requests.
WARMUP_SEED_OFFSET = 1_000_003


@dataclass(frozen=True, slots=True)
class Turn:
    """One request of a conversation: the new user text and its max_tokens."""

    text: str
    output_len: int
    #: Tokens of the whole prompt when known before the run (single-turn datasets).
    prompt_len: int | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    turns: tuple[Turn, ...]
    system: str | None = None
    #: Sent as OpenAI's ``user`` field (routers may use it for affinity).
    user: str | None = None
    think_time_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Workload:
    dataset: str
    conversations: tuple[Conversation, ...]
    counter: str

    @property
    def num_requests(self) -> int:
        return sum(len(c.turns) for c in self.conversations)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The dataset flags of `corral bench`; lengths are in tokens; None takes the dataset default."""

    dataset: DatasetName = "random"
    num_prompts: int = 100
    input_len: int | None = None
    output_len: int | None = None
    range_ratio: float = 0.0
    prefix_len: int | None = None
    num_prefixes: int = 5
    num_users: int = 8
    num_rounds: int = 4
    history_len: int = 256
    think_time_s: float = 0.0
    dataset_path: str | None = None
    seed: int = 0


#: dataset -> (input_len, output_len, prefix_len) defaults.
DEFAULT_LENGTHS: dict[str, tuple[int, int, int]] = {
    "random": (1024, 128, 0),
    "prefix-repetition": (256, 128, 256),
    "multi-round-qa": (32, 32, 256),
    "sharegpt": (0, 0, 0),
    "custom": (0, 256, 0),
}


def lengths(spec: WorkloadSpec) -> tuple[int, int, int]:
    """(input_len, output_len, prefix_len) with the dataset's defaults filled in."""
    default_in, default_out, default_prefix = DEFAULT_LENGTHS[spec.dataset]
    return (
        default_in if spec.input_len is None else spec.input_len,
        default_out if spec.output_len is None else spec.output_len,
        default_prefix if spec.prefix_len is None else spec.prefix_len,
    )


def sample_lengths(rng: np.random.Generator, mean: int, range_ratio: float, n: int) -> list[int]:
    """n integers uniform in [floor(mean*(1-r)), ceil(mean*(1+r))], as vLLM's random dataset."""
    low = math.floor(mean * (1 - range_ratio))
    high = math.ceil(mean * (1 + range_ratio))
    return [int(x) for x in rng.integers(low, high + 1, size=n)]


async def build_workload(spec: WorkloadSpec, counter: TokenCounter) -> Workload:
    builders = {
        "random": _random,
        "prefix-repetition": _prefix_repetition,
        "multi-round-qa": _multi_round_qa,
        "sharegpt": _sharegpt,
        "custom": _custom,
    }
    conversations = await builders[spec.dataset](spec, counter, np.random.default_rng(spec.seed))
    return Workload(spec.dataset, tuple(conversations), counter.name)


def warmup_spec(spec: WorkloadSpec, n: int) -> WorkloadSpec:
    """The spec of ``n`` single-turn warm-up requests shaped like the measured ones."""
    seed = spec.seed + WARMUP_SEED_OFFSET
    if spec.dataset == "multi-round-qa":
        return replace(spec, seed=seed, num_users=n, num_rounds=1)
    return replace(spec, seed=seed, num_prompts=n)


async def _random(
    spec: WorkloadSpec, counter: TokenCounter, rng: np.random.Generator
) -> list[Conversation]:
    input_len, output_len, prefix_len = lengths(spec)
    prefix = ""
    if prefix_len:
        [(prefix, prefix_len)] = await fit_texts(counter, [FitJob(draw_words(rng, prefix_len), prefix_len)])
    inputs = sample_lengths(rng, input_len, spec.range_ratio, spec.num_prompts)
    outputs = sample_lengths(rng, output_len, spec.range_ratio, spec.num_prompts)
    jobs = [FitJob(draw_words(rng, n), prefix_len + n, prefix, prefix_len) for n in inputs]
    fitted = await fit_texts(counter, jobs)
    return [
        Conversation((Turn(text, max(1, out), count),))
        for (text, count), out in zip(fitted, outputs, strict=True)
    ]


async def _prefix_repetition(
    spec: WorkloadSpec, counter: TokenCounter, rng: np.random.Generator
) -> list[Conversation]:
    suffix_len, output_len, prefix_len = lengths(spec)
    prefixes = await fit_texts(
        counter, [FitJob(draw_words(rng, prefix_len), prefix_len) for _ in range(spec.num_prefixes)]
    )
    owners = [i % spec.num_prefixes for i in range(spec.num_prompts)]
    rng.shuffle(owners)
    jobs = [
        FitJob(draw_words(rng, suffix_len), prefixes[p][1] + suffix_len, *prefixes[p])
        for p in owners
    ]
    fitted = await fit_texts(counter, jobs)
    return [Conversation((Turn(text, max(1, output_len), count),)) for text, count in fitted]


async def _multi_round_qa(
    spec: WorkloadSpec, counter: TokenCounter, rng: np.random.Generator
) -> list[Conversation]:
    question_len, answer_len, system_len = lengths(spec)
    system = None
    if system_len:
        [(system, _)] = await fit_texts(counter, [FitJob(draw_words(rng, system_len), system_len)])
    users, rounds = spec.num_users, spec.num_rounds
    histories = [""] * users
    if spec.history_len:
        jobs = [FitJob(draw_words(rng, spec.history_len), spec.history_len) for _ in range(users)]
        histories = [text for text, _ in await fit_texts(counter, jobs)]
    questions = sample_lengths(rng, question_len, spec.range_ratio, users * rounds)
    answers = sample_lengths(rng, answer_len, spec.range_ratio, users * rounds)
    fitted = await fit_texts(counter, [FitJob(draw_words(rng, n), n) for n in questions])
    conversations = []
    for u in range(users):
        turns = []
        for r in range(rounds):
            text = fitted[u * rounds + r][0]
            if r == 0 and histories[u]:
                text = f"{histories[u]}\n\n{text}"
            turns.append(Turn(text, max(1, answers[u * rounds + r])))
        conversations.append(
            Conversation(tuple(turns), system, f"bench-user-{u}", spec.think_time_s)
        )
    return conversations


async def _sharegpt(
    spec: WorkloadSpec, counter: TokenCounter, rng: np.random.Generator
) -> list[Conversation]:
    pairs = load_sharegpt(_path(spec))
    order = rng.permutation(len(pairs))
    chosen: list[Conversation] = []
    batch = 64
    for start in range(0, len(order), batch):
        picked = [pairs[i] for i in order[start : start + batch]]
        counts = await counter.count([text for pair in picked for text in pair])
        for k, (prompt, _) in enumerate(picked):
            prompt_len, answer_len = counts[2 * k], counts[2 * k + 1]
            output_len = spec.output_len or answer_len
            # vLLM's filter: drop tiny pairs and those past a 1024 / 2048-token budget.
            if prompt_len < 4 or output_len < 4 or prompt_len > 1024 or prompt_len + output_len > 2048:
                continue
            chosen.append(Conversation((Turn(prompt, output_len, prompt_len),)))
            if len(chosen) == spec.num_prompts:
                return chosen
    if not chosen:
        raise ValueError(f"--dataset-path: no usable conversation in {spec.dataset_path}")
    return [chosen[i % len(chosen)] for i in range(spec.num_prompts)]


async def _custom(
    spec: WorkloadSpec, counter: TokenCounter, rng: np.random.Generator
) -> list[Conversation]:
    _, default_out, _ = lengths(spec)
    rows = load_custom(_path(spec))
    order = rng.permutation(len(rows))
    picked = [rows[order[i % len(rows)]] for i in range(spec.num_prompts)]
    counts = await counter.count([prompt for prompt, _ in picked])
    return [
        Conversation((Turn(prompt, out or default_out, n),))
        for (prompt, out), n in zip(picked, counts, strict=True)
    ]


def _path(spec: WorkloadSpec) -> str:
    if spec.dataset_path is None:
        raise ValueError(f"--dataset-path: the {spec.dataset} dataset needs a file")
    return spec.dataset_path


# -- arrivals -----------------------------------------------------------------------------


def arrival_offsets(
    n: int, rate: float, burstiness: float, rng: np.random.Generator
) -> np.ndarray:
    """Seconds from the start at which each of ``n`` requests (conversations) is released.

    Gaps ~ Gamma(shape=burstiness, scale=1/(rate*burstiness)): mean 1/rate, coefficient of
    variation 1/sqrt(burstiness); burstiness 1 is a Poisson process. As `vllm bench serve`
    does, the offsets are then scaled so the last one falls at exactly n/rate, so the offered
    rate of a run is the requested one. rate = inf releases everything at t = 0.
    """
    if n == 0:
        return np.zeros(0)
    if math.isinf(rate):
        return np.zeros(n)
    offsets: np.ndarray = np.cumsum(gamma_gaps(rate, burstiness, rng, n))
    return offsets * ((n / rate) / float(offsets[-1]))


def open_arrivals(
    rate: float, burstiness: float, rng: np.random.Generator, horizon_s: float
) -> np.ndarray:
    """Unscaled gamma-process offsets up to ``horizon_s`` (for --duration runs)."""
    expected = rate * horizon_s
    size = int(expected + 6 * math.sqrt(expected / burstiness) + 16)
    offsets = np.cumsum(gamma_gaps(rate, burstiness, rng, size))
    return offsets[offsets < horizon_s]


def gamma_gaps(rate: float, burstiness: float, rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)


def cycle(conversations: Sequence[Conversation], n: int) -> list[Conversation]:
    """``n`` conversations, repeating the workload's when it has fewer."""
    return [conversations[i % len(conversations)] for i in range(n)]
