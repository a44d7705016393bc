"""Policies by name, as ``RoutingConfig.policy`` names them.

A new policy is one factory here plus its name in ``corral.config.RoutingPolicyName``;
the proxy does not change. Every policy is a :class:`ComposedPolicy`:

    round_robin   healthy -> turns
    least_loaded  healthy -> fewest in flight                                   -> best, random ties
    session       healthy -> session (w) + fewest in flight (w)                  -> best, random ties
    prefix        text blocks | healthy -> least work (prefix held, queue, running) -> best, random ties
    kv            token blocks | healthy -> least work (prefix held, queue, running) -> best, random ties

(w): weight from ``RoutingConfig.weights``. Least work: see ``WorkScorer``. ``prefix``
learns from its own picks; ``kv`` reads an index kept by the workers' KV events.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from corral.config import RoutingConfig
from corral.errors import ConfigError
from corral.prefix.index import SHARED_MEDIA, PrefixIndex
from corral.router.routing.base import Policy
from corral.router.routing.filters import HealthyFilter
from corral.router.routing.pickers import MaxScorePicker, RoundRobinPicker
from corral.router.routing.policy import ComposedPolicy, WeightedScorer
from corral.router.routing.prepare import TextBlocks, TokenBlocks
from corral.router.routing.scorers import (
    LeastLoadedScorer,
    PrefixScorer,
    SessionScorer,
    SessionTable,
    WorkScorer,
)

if TYPE_CHECKING:  # llama.cpp is imported only where a model is routed by tokens
    from corral.prefix.tokenizer import PromptTokenizer


def _default_index() -> PrefixIndex:
    config = RoutingConfig()
    return PrefixIndex(
        max_blocks=config.index_max_blocks,
        max_bytes=config.index_max_bytes,
        medium_weights=config.weights.medium_weights(),
        shared_media=SHARED_MEDIA,
        children_tokens=True,
    )


@dataclass(frozen=True)
class PolicyParts:
    """What policies are made of: the routing config and the state they share.

    ``tokenizer`` and ``executor`` are the model's own, needed by ``kv`` only. Defaults
    give a policy its own fresh state (tests, embedders).
    """

    rng: random.Random
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    block_size: int = 16
    index: PrefixIndex = field(default_factory=_default_index)
    sessions: SessionTable | None = None
    tokenizer: PromptTokenizer | None = None
    executor: Executor | None = None


PolicyFactory = Callable[[PolicyParts], Policy]


def round_robin(parts: PolicyParts) -> Policy:
    return ComposedPolicy(
        "round_robin", filters=[HealthyFilter()], scorers=[], picker=RoundRobinPicker()
    )


def least_loaded(parts: PolicyParts) -> Policy:
    return ComposedPolicy(
        "least_loaded",
        filters=[HealthyFilter()],
        scorers=[WeightedScorer(LeastLoadedScorer(), 1.0)],
        picker=MaxScorePicker(parts.rng),
    )


def session(parts: PolicyParts) -> Policy:
    config = parts.routing
    sessions = parts.sessions or SessionTable(config.max_sessions)
    scorer = SessionScorer(sessions, header=config.session_header)
    return ComposedPolicy(
        "session",
        filters=[HealthyFilter()],
        scorers=[
            WeightedScorer(scorer, config.weights.session),
            WeightedScorer(LeastLoadedScorer(), config.weights.load),
        ],
        picker=MaxScorePicker(parts.rng),
        observers=[scorer],
    )


def prefix(parts: PolicyParts) -> Policy:
    scorer = PrefixScorer(parts.index, learn=True)
    return _prefix_aware(
        "prefix", parts, scorer, TextBlocks(block_chars=parts.routing.prefix_block_chars)
    )


def kv(parts: PolicyParts) -> Policy:
    if parts.tokenizer is None or parts.executor is None:
        raise ConfigError("router.routing.policy: 'kv' needs the model's tokenizer (a GGUF source)")
    preparer = TokenBlocks(
        parts.tokenizer, parts.index, block_size=parts.block_size, executor=parts.executor
    )
    return _prefix_aware("kv", parts, PrefixScorer(parts.index, learn=False), preparer)


def _prefix_aware(
    name: str, parts: PolicyParts, scorer: PrefixScorer, preparer: TextBlocks | TokenBlocks
) -> Policy:
    work = WorkScorer(scorer, in_flight_tokens=parts.routing.in_flight_tokens)
    return ComposedPolicy(
        name,
        filters=[HealthyFilter()],
        scorers=[WeightedScorer(work, 1.0)],
        picker=MaxScorePicker(parts.rng),
        preparer=preparer,
        observers=[scorer],
    )


POLICIES: Mapping[str, PolicyFactory] = MappingProxyType(
    {
        "round_robin": round_robin,
        "least_loaded": least_loaded,
        "session": session,
        "prefix": prefix,
        "kv": kv,
    }
)


def build_policy(name: str, *, rng: random.Random, parts: PolicyParts | None = None) -> Policy:
    """The policy called ``name``, with its own state (round-robin turns, ...) unless
    ``parts`` shares some (an index, a session table)."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ConfigError(
            f"router.routing.policy: unknown policy '{name}' (have: {', '.join(POLICIES)})"
        )
    return factory(parts or PolicyParts(rng))
