"""The worker's tiers of prefix KV states below RAM: local disk, then the stack's Redis.

The RAM tier is :mod:`corral.worker.prefix_store` (driven by
:mod:`corral.worker.prefix_cache`); this package keeps the same states longer and shares
them between workers:

- :mod:`.codec`: a :class:`~corral.worker.seq_state.SeqState` as bytes (header, tokens,
  state, crc32), and back, refusing anything damaged or from another setup;
- :mod:`.compat`: the digest of everything that makes a state loadable (model file, engine
  version, context size, KV types, block size, model name);
- :mod:`.disk`: :class:`~.disk.DiskTier`, a byte-bounded directory that survives restarts;
- :mod:`.redis_tier`: :class:`~.redis_tier.RedisTier`, shared by every worker of a model,
  found by chunk-boundary pointers, bounded, with a TTL on every key;
- :mod:`.writer`: the background thread that writes, so generation does not wait;
- :mod:`.tiered`: :class:`~.tiered.LowerTiers`, the lookup order (disk, then Redis), the
  write-through, the KV events of each medium and the per-tier stats;
- :mod:`.stats`: per-tier counters;
- :mod:`.settings`: building the tiers a stack asks for.

Lower tiers keep prefixes cut at multiples of ``cache.chunk_tokens`` (rounded down to whole
blocks), so that prompts sharing long prefixes map to few, reusable states.
"""
