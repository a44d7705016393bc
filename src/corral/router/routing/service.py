"""Routing for a whole stack: each model's policy, the state they share, the background work.

    RoutingService(stack)      checks the routing config against the models
      .start(pool, transport)  loads the tokenizers ``kv`` needs (in threads), builds one
                               policy per model, follows the workers' KV events
                               (corral workers over SSE, vLLM over ZMQ)
      .policy                  what the proxy calls (one Policy, dispatching by model)
      .selfcheck               predicted vs reported cached tokens (a ResponseObserver)
      .aclose()                stops the event followers and the tokenizer threads

The policies share one bounded :class:`~corral.prefix.index.PrefixIndex` (text blocks of
``prefix`` models and token blocks of ``kv`` models cannot collide: they are seeded with
the model name and hashed differently) and one session table.
"""

from __future__ import annotations

import asyncio
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from corral.config import ModelConfig, RoutingPolicyName, StackConfig
from corral.errors import ConfigError
from corral.prefix.index import SHARED_MEDIA, PrefixIndex
from corral.router.discovery.base import prefill_pool
from corral.router.kv_events import KVEventSubscriber
from corral.router.pool import EndpointPool
from corral.router.routing.base import Policy, RequestContext
from corral.router.routing.policy import ModelPolicies
from corral.router.routing.registry import PolicyParts, build_policy
from corral.router.routing.scorers import SessionTable
from corral.router.selfcheck import SelfCheck
from corral.router.transport.base import Transport
from corral.router.vllm_kv_events import VllmKVEventSubscriber, vllm_target

if TYPE_CHECKING:
    from corral.prefix.tokenizer import PromptTokenizer

logger = logging.getLogger(__name__)


class RoutingService:
    """Owns the policies' shared state and background tasks (stop with :meth:`aclose`)."""

    def __init__(
        self, stack: StackConfig, *, rng: random.Random, policy: Policy | None = None
    ) -> None:
        self._stack = stack
        self._config = stack.router.routing
        self._check(stack)
        self._rng = rng
        self._given = policy
        self.index = PrefixIndex(
            max_blocks=self._config.index_max_blocks,
            max_bytes=self._config.index_max_bytes,
            medium_weights=self._config.weights.medium_weights(),
            shared_media=SHARED_MEDIA,
            children_tokens=bool(self.kv_models()),
        )
        self.sessions = SessionTable(self._config.max_sessions)
        self.selfcheck = SelfCheck(tolerance_tokens=stack.prefix.block_size)
        self.policy: Policy | None = None
        self.tokenizers: dict[str, PromptTokenizer] = {}
        self.subscriber: KVEventSubscriber | None = None
        self.vllm_subscriber: VllmKVEventSubscriber | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def name(self) -> str:
        if self._given is not None:
            return self._given.name
        names = sorted({self._policy_name(model) for model in self._stack.models})
        return ", ".join(names)

    def kv_models(self) -> list[ModelConfig]:
        """The models routed by KV events (text models with the ``kv`` policy)."""
        return [model for model in self._stack.models if self._policy_name(model) == "kv"]

    async def start(self, pool: EndpointPool, transport: Transport) -> Policy:
        if self._given is not None:
            self.policy = self._given
            return self._given
        kv_models = self.kv_models()
        if kv_models:
            await self._load_tokenizers(kv_models)
        self.policy = ModelPolicies(
            {model.name: self._build(model) for model in self._stack.models}
        )
        vllm_models = [model for model in kv_models if model.engine == "vllm"]
        kv_models = [model for model in kv_models if model.engine != "vllm"]
        if vllm_models:
            self.vllm_subscriber = VllmKVEventSubscriber(
                self.index,
                lambda: [vllm_target(e.url, m) for m in vllm_models for e in pool.endpoints(m.name)],
                block_size=self._stack.prefix.block_size,
                sync_interval_s=self._stack.router.health_interval_s,
            )
            self.vllm_subscriber.start()
        if kv_models:
            kv_names = [model.name for model in kv_models]
            self.subscriber = KVEventSubscriber(
                self.index,
                transport,
                # Prefill workers too: the KV they write to Redis serves the decode workers.
                lambda: [e.url for name in kv_names for e in (*pool.endpoints(name), *pool.endpoints(prefill_pool(name)))],
                reconnect_s=self._config.kv_reconnect_s,
                reconnect_max_s=self._config.kv_reconnect_max_s,
                sync_interval_s=self._stack.router.health_interval_s,
                rng=random.Random(self._rng.random()),
            )
            self.subscriber.start()
        return self.policy

    async def prepare(self, ctx: RequestContext) -> None:
        """The policy's per-request work before the proxy picks (hashing the prompt)."""
        policy = self.policy
        if policy is not None:
            await policy.prepare(ctx)

    async def aclose(self) -> None:
        if self.subscriber is not None:
            await self.subscriber.aclose()
            self.subscriber = None
        if self.vllm_subscriber is not None:
            await self.vllm_subscriber.aclose()
            self.vllm_subscriber = None
        executor, self._executor = self._executor, None
        if executor is not None:  # no tokenization may be running when the vocabularies go
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        for tokenizer in self.tokenizers.values():
            tokenizer.close()
        self.tokenizers.clear()
        self.policy = None

    def _policy_name(self, model: ModelConfig) -> RoutingPolicyName:
        name = self._config.policy_for(model.name)
        if name in ("prefix", "kv") and model.task == "embedding":
            return "least_loaded"  # embeddings keep no KV cache: no prefix to route by
        return name

    def _build(self, model: ModelConfig) -> Policy:
        parts = PolicyParts(
            self._rng,
            routing=self._config,
            block_size=self._stack.prefix.block_size,
            index=self.index,
            sessions=self.sessions,
            tokenizer=self.tokenizers.get(model.name),
            executor=self._executor,
        )
        return build_policy(self._policy_name(model), rng=self._rng, parts=parts)

    async def _load_tokenizers(self, models: list[ModelConfig]) -> None:
        from corral.prefix.tokenizer import PromptTokenizer  # imports llama.cpp

        self._executor = ThreadPoolExecutor(
            self._config.tokenizer_threads, thread_name_prefix="corral-tokenize"
        )
        for model in models:
            # a vLLM model's source is for vLLM (a hub id): its GGUF vocabulary is `tokenizer`
            source = model.tokenizer if model.engine == "vllm" and model.tokenizer else model.source
            tokenizer = await asyncio.to_thread(
                PromptTokenizer.load, source, cache_bytes=self._config.tokenizer_cache_bytes
            )
            self.tokenizers[model.name] = tokenizer
            logger.info(
                "model %s: routing by KV events, tokenizing %s",
                model.name,
                "piece by piece" if tokenizer.segmenter.segmented else "whole prompts",
            )

    @staticmethod
    def _check(stack: StackConfig) -> None:
        routing = stack.router.routing
        names = {model.name for model in stack.models}
        unknown = sorted(set(routing.models) - names)
        if unknown:
            raise ConfigError(
                f"router.routing.models: no model named {', '.join(map(repr, unknown))} "
                f"(have: {', '.join(sorted(names))})"
            )
        for model in stack.models:
            if routing.policy_for(model.name) != "kv" or model.task == "embedding":
                continue
            if model.engine not in ("llamacpp", "vllm"):
                raise ConfigError(
                    f"router.routing: model '{model.name}' cannot use the 'kv' policy: it needs "
                    f"corral workers (engine: llamacpp) or vLLM, not engine '{model.engine}'; give "
                    "it another policy under router.routing.models"
                )
            if model.engine == "vllm" and model.tokenizer is None and not model.source.endswith(".gguf"):
                raise ConfigError(
                    f"router.routing: model '{model.name}' cannot use the 'kv' policy without "
                    "`tokenizer`: the router tokenizes prompts as vLLM does, from a GGUF file with "
                    "the model's vocabulary and chat template; give it one, or another policy "
                    "under router.routing.models"
                )
