"""The session, prefix and kv policies and their scorers: pure, synchronous, no network."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from corral.config import RoutingConfig
from corral.errors import ConfigError
from corral.prefix.index import SHARED_MEDIA, PrefixIndex
from corral.router.endpoint import Endpoint
from corral.router.routing import RequestContext, build_policy
from corral.router.routing.base import Policy, PromptBlocks
from corral.router.routing.registry import PolicyParts
from corral.router.routing.scorers import (
    PrefixScorer,
    SessionScorer,
    SessionTable,
    WorkScorer,
)

CHAT = "/v1/chat/completions"


def endpoints(count: int, model: str = "m") -> list[Endpoint]:
    return [Endpoint(f"http://e{i}", model, healthy=True) for i in range(count)]


def chat(
    *contents: str, user: str | None = None, headers: dict[str, str] | None = None
) -> RequestContext:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": text}
        for i, text in enumerate(contents)
    ]
    return RequestContext("m", "chat", CHAT, {"messages": messages}, user, headers or {})


def with_blocks(hashes: Sequence[int], total: int | None = None, tokens: int = 0) -> RequestContext:
    ctx = chat("x")
    total = len(hashes) if total is None else total
    ctx.routing.blocks = PromptBlocks(hashes, 16, total, tokens or total * 16)
    return ctx


def parts(seed: int = 0, **routing: Any) -> PolicyParts:
    return PolicyParts(
        random.Random(seed),
        routing=RoutingConfig.model_validate(routing),
        index=PrefixIndex(max_blocks=100_000, max_bytes=1 << 26),
    )


def kv_picker(index: PrefixIndex, seed: int) -> Policy:
    """The kv policy over ``index``, to call ``pick`` on prompts given as blocks (its
    ``prepare``, which would tokenize, is not called: no tokenizer is loaded)."""
    parts = PolicyParts(random.Random(seed), index=index, tokenizer=object(), executor=object())  # type: ignore[arg-type]
    return build_policy("kv", rng=random.Random(seed), parts=parts)


def pick(policy: Policy, ctx: RequestContext, pool: Sequence[Endpoint]) -> Endpoint:
    """Pick, and count the request against the pick as the proxy does."""
    endpoint = policy.pick(ctx, pool)
    assert endpoint is not None
    endpoint.in_flight += 1
    endpoint.queued_tokens += ctx.routing.prefill_tokens
    return endpoint


async def route(policy: Policy, ctx: RequestContext, pool: Sequence[Endpoint]) -> Endpoint:
    """What the app and proxy do: prepare, then pick and count."""
    await policy.prepare(ctx)
    return pick(policy, ctx, pool)


# -- scorers ------------------------------------------------------------------------------


def test_prefix_scorer_is_matched_over_total_blocks() -> None:
    index = PrefixIndex(max_blocks=100, max_bytes=1 << 20)
    index.store("http://e0", [1, 2, 3])
    index.store("http://e1", [1])
    scorer = PrefixScorer(index, learn=False)
    pool = endpoints(3)
    assert list(scorer.score(with_blocks([1, 2, 3, 4], total=8), pool)) == [3 / 8, 1 / 8, 0.0]
    assert list(scorer.score(chat("no blocks"), pool)) == [0.0, 0.0, 0.0]


def test_prefix_scorer_predicts_and_reserves_on_pick() -> None:
    index = PrefixIndex(max_blocks=100, max_bytes=1 << 20)
    index.store("http://e0", [1, 2])
    scorer = PrefixScorer(index, learn=False)
    pool = endpoints(2)
    ctx = with_blocks([1, 2, 3], total=5, tokens=80)
    scorer.score(ctx, pool)
    scorer.picked(ctx, pool[0])
    assert (ctx.routing.predicted_cached_tokens, ctx.routing.prefill_tokens) == (32, 48)
    scorer.picked(ctx, pool[1])  # a retry elsewhere: nothing cached there
    assert (ctx.routing.predicted_cached_tokens, ctx.routing.prefill_tokens) == (0, 80)
    assert index.blocks("http://e1") == 0  # kv mode learns only from the workers' events


def test_prefix_scorer_learns_where_prompts_went() -> None:
    index = PrefixIndex(max_blocks=100, max_bytes=1 << 20)
    scorer = PrefixScorer(index, learn=True)
    pool = endpoints(2)
    ctx = with_blocks([7, 8, 9])
    scorer.score(ctx, pool)
    scorer.picked(ctx, pool[1])
    assert ctx.routing.predicted_cached_tokens == 0
    assert index.matched([7, 8, 9], ["http://e0", "http://e1"]) == [0, 3]


def test_work_scorer_counts_uncached_prefill_queued_prefill_and_running_requests() -> None:
    index = PrefixIndex(max_blocks=100, max_bytes=1 << 20, medium_weights={"disk": 0.5})
    pool = endpoints(4)
    index.store(pool[1].url, range(1, 9))  # all 8 blocks (128 tokens) in RAM
    index.store(pool[2].url, range(1, 9), "disk")  # worth half
    pool[3].queued_tokens, pool[3].in_flight = 40, 2
    scorer = WorkScorer(PrefixScorer(index, learn=False), in_flight_tokens=100)
    ctx = with_blocks(range(1, 9), total=10)  # 160 prompt tokens
    assert scorer.work(ctx, pool) == [160, 32, 96, 160 + 40 + 200]
    assert list(scorer.score(ctx, pool)) == pytest.approx([33 / 161, 1.0, 33 / 97, 33 / 401])
    no_prompt = chat("x")  # nothing to prefill known: least queued and running work
    assert scorer.work(no_prompt, pool) == [0, 0, 0, 240]


def test_a_busy_warm_endpoint_keeps_a_long_context_until_waiting_costs_more() -> None:
    """Scores squeezed into 0..1 by min-max spread let one running request outweigh any
    prefix; in tokens of work, a warm endpoint keeps a long context while waiting there
    costs less than recomputing it, and spills over when it costs more."""
    index = PrefixIndex(max_blocks=1000, max_bytes=1 << 20)
    policy = kv_picker(index, seed=0)
    pool = endpoints(3)
    index.store(pool[0].url, range(1, 61))  # 960 of a 1,000-token prompt
    picks = [pick(policy, with_blocks(range(1, 61), total=62, tokens=1000), pool).url for _ in range(5)]
    # There: 40 to prefill + (40 queued + 256) per running request; elsewhere: 1,000.
    assert picks[:4] == [pool[0].url] * 4 and picks[4] != pool[0].url


def test_session_scorer_uses_the_header_then_the_user_field() -> None:
    sessions = SessionTable(10)
    scorer = SessionScorer(sessions, header="X-Session-ID")
    pool = endpoints(2)
    by_header = chat("x", headers={"x-session-id": "s1"}, user="u1")
    scorer.picked(by_header, pool[1])
    assert list(scorer.score(chat("y", headers={"x-session-id": "s1"}), pool)) == [0.0, 1.0]
    assert list(scorer.score(chat("y", user="u1"), pool)) == [0.0, 0.0]  # header won
    scorer.picked(chat("z", user="u2"), pool[0])
    assert list(scorer.score(chat("w", user="u2"), pool)) == [1.0, 0.0]
    assert list(scorer.score(chat("anonymous"), pool)) == [0.0, 0.0]


def test_session_table_is_bounded() -> None:
    table = SessionTable(3)
    for number in range(10):
        table.put(f"s{number}", "http://e0")
    assert len(table) == 3 and table.get("s0") is None and table.get("s9") == "http://e0"


# -- policies ------------------------------------------------------------------------------


async def test_session_policy_sticks_and_spreads_new_sessions() -> None:
    policy = build_policy("session", rng=random.Random(0), parts=parts())
    pool = endpoints(3)
    first = {
        key: await route(policy, chat("hi", headers={"x-session-id": key}), pool) for key in "abc"
    }
    assert len(set(first.values())) == 3  # new sessions: least loaded first
    for _ in range(5):
        for key, endpoint in first.items():
            assert (
                await route(policy, chat("again", headers={"x-session-id": key}), pool) is endpoint
            )


async def test_prefix_policy_follows_a_growing_conversation() -> None:
    policy = build_policy("prefix", rng=random.Random(1), parts=parts(prefix_block_chars=16))
    pool = endpoints(4)
    history = ["You are a careful assistant. " * 20]
    homes = []
    for turn in range(6):
        history.append(f"question {turn}: " + "what about this? " * 10)
        ctx = chat(*history)
        homes.append(await route(policy, ctx, pool))
        pool_loads = [endpoint.in_flight for endpoint in pool]
        assert ctx.routing.predicted_cached_tokens is not None
        history.append(f"answer {turn}")
        for endpoint in pool:  # the previous turn finished
            endpoint.in_flight = endpoint.queued_tokens = 0
        assert max(pool_loads) == 1
    assert len(set(homes)) == 1


async def test_prefix_policy_spreads_unrelated_prompts() -> None:
    policy = build_policy("prefix", rng=random.Random(2), parts=parts())
    pool = endpoints(4)
    for number in range(40):
        await route(policy, chat(f"conversation {number} " * 30), pool)
    assert {endpoint.in_flight for endpoint in pool} == {10}


@pytest.mark.parametrize("name", ["least_loaded", "session", "prefix"])
async def test_reservation_prevents_herding(name: str) -> None:
    """100 simultaneous misses over 4 endpoints: each pick counts at once, so they spread."""
    policy = build_policy(name, rng=random.Random(3), parts=parts())
    pool = endpoints(4)
    rng = random.Random(4)
    for number in range(100):
        text = f"{rng.random()} a distinct prompt nobody has seen, number {number}. " * 20
        await route(policy, chat(text, headers={"x-session-id": f"s{number}"}), pool)
    loads = [endpoint.in_flight for endpoint in pool]
    assert sum(loads) == 100 and max(loads) / min(loads) <= 1.5


async def test_a_burst_of_one_shared_prefix_does_not_all_land_on_one_endpoint() -> None:
    """The first replica that takes the prefix pays its prefill; queued tokens tie the
    others back in, so the burst is shared (the llm-d herding failure mode)."""
    policy = build_policy("prefix", rng=random.Random(5), parts=parts())
    pool = endpoints(4)
    shared = "The same long system prompt for everyone. " * 40
    for number in range(100):
        await route(policy, chat(shared + f"user {number}"), pool)
    loads = [endpoint.in_flight for endpoint in pool]
    assert max(loads) <= 50, loads


async def test_the_cost_of_a_running_request_comes_from_the_config() -> None:
    """The conversation's home is decoding its previous turn: cheap to wait for when a
    running request counts for little, not when it counts for more than the prefill."""
    for in_flight_tokens, stays in ((0.0, True), (10_000.0, False)):
        policy = build_policy("prefix", rng=random.Random(0), parts=parts(in_flight_tokens=in_flight_tokens))
        pool = endpoints(2)
        home = await route(policy, chat("a long shared context " * 40, "and a question"), pool)
        home.queued_tokens = 0  # prefilled; still decoding
        ctx = chat("a long shared context " * 40, "and a question", "answer", "next")
        await policy.prepare(ctx)
        assert (policy.pick(ctx, pool) is home) is stays


async def test_a_burst_on_a_long_prefix_one_endpoint_holds_spills_over() -> None:
    """kv learns only from events: a burst on a prefix one endpoint holds must not all
    queue there (SGLang #32983); it takes more than its share, as it is cheaper, not all."""
    index = PrefixIndex(max_blocks=10_000, max_bytes=1 << 22)
    policy = kv_picker(index, seed=6)
    pool = endpoints(4)
    index.store(pool[0].url, range(1, 58))  # a 912-token shared prefix of 1,000
    for _ in range(100):
        pick(policy, with_blocks(range(1, 58), total=63, tokens=1000), pool)
    loads = [endpoint.in_flight for endpoint in pool]
    assert loads[0] == max(loads) and loads[0] <= 60 and min(loads[1:]) >= 13, loads


def test_kv_needs_a_tokenizer() -> None:
    with pytest.raises(ConfigError, match="tokenizer"):
        build_policy("kv", rng=random.Random(0))


async def test_prefix_policies_ignore_requests_without_a_prompt() -> None:
    policy = build_policy("prefix", rng=random.Random(0), parts=parts())
    pool = endpoints(2)
    ctx = RequestContext("m", "embedding", "/v1/embeddings", {"input": "x"}, None, {})
    endpoint = await route(policy, ctx, pool)
    assert endpoint in pool and ctx.routing.predicted_cached_tokens is None
    assert Counter(e.in_flight for e in pool) == Counter({1: 1, 0: 1})


def test_the_kv_policy_prefers_a_ram_hit_to_a_disk_hit_to_a_miss() -> None:
    config = RoutingConfig()
    index = PrefixIndex(max_blocks=1000, max_bytes=1 << 20, medium_weights=config.weights.medium_weights(),
                        shared_media=SHARED_MEDIA)
    pool = endpoints(3)
    index.store(pool[1].url, range(1, 9), "disk")
    index.store(pool[2].url, range(1, 9), "ram")
    scorer = PrefixScorer(index, learn=False)
    scores = scorer.score(with_blocks(range(1, 9)), pool)
    assert scores[0] == 0.0 < scores[1] < scores[2] == 1.0
    assert scores[1] == pytest.approx(config.weights.disk_hit)


def test_a_block_in_redis_counts_for_every_replica_and_is_predicted_as_cached() -> None:
    index = PrefixIndex(max_blocks=1000, max_bytes=1 << 20, medium_weights={"redis": 0.5},
                        shared_media=SHARED_MEDIA)
    pool = endpoints(2)
    index.store(pool[0].url, range(1, 9), "redis")  # e0 wrote it; e1 can load it as well
    scorer = PrefixScorer(index, learn=False)
    ctx = with_blocks(range(1, 9), total=10)
    assert scorer.score(ctx, pool) == [0.4, 0.4]
    scorer.picked(ctx, pool[1])
    assert ctx.routing.predicted_cached_tokens == 8 * 16
