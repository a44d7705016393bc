"""The Redis tier: prefix states shared by every worker of a model, through the stack's Redis.

Keys (``{c}`` is the hex compatibility digest, so only workers that can load a state find
it; ``{h}`` a block hash as 16 hex digits)::

    corral:kv:{c}:b:{h}    blob: one codec blob, named by the last block of its prefix
    corral:kv:{c}:p:{h}    pointer: "<blob key> <blob tokens>", for every chunk boundary
                           inside the blob's prefix (h is the block hash at that boundary)
    corral:kv:lru          sorted set: blob key -> last use (Redis' clock, microseconds), for
                           all models
    corral:kv:sizes        hash: blob key -> bytes
    corral:kv:ptrs         hash: blob key -> its pointer keys
    corral:kv:bytes        the total of corral:kv:sizes

Contract (see :mod:`corral.worker.kvstore.tier` for the shared part):

- ``match``: ONE ``MGET`` of the pointers of the prompt's chunk boundaries; the longest
  present wins. So a prompt that shares only the first chunks of a stored prefix finds it.
- ``load``: ``GET`` of the blob and a touch (last use, TTLs) in one round trip; a blob
  gone meanwhile is a miss (and its dangling pointer is deleted).
- ``store`` (writer thread): skipped when the blob exists (then only touched); otherwise
  one ``MULTI``: ``SET`` the blob, then a Lua script that points the chunk boundaries at it,
  drops blobs the new one makes redundant (a blob that ends at one of its boundaries is a
  prefix of it), drops expired ones, and evicts least recently used blobs until all
  workers' blobs together fit ``max_bytes`` (only a lone new blob may stay over it, and a
  blob larger than ``max_bytes`` is not stored). Atomic, so two workers storing at once
  cannot overshoot the shared bound.
- Last use is Redis' clock (``TIME`` in the scripts, never a worker's), kept strictly
  increasing, so the LRU order is the order in which Redis ran the stores and loads, however
  the workers' clocks are skewed. Needs Redis >= 5 (scripts replicated by their effects).
- Every key has a TTL (``ttl_s``), refreshed when used.
- Every call has a timeout (``timeout_s``). Redis down, slow or refusing is a miss, never an
  error: logged once per outage, counted (``unavailable``), and retried after a backoff
  (0.5 s doubling to 30 s); meanwhile the tier is skipped without waiting.
- KV events: the worker publishes (medium ``"redis"``) the blobs *it* wrote, until it
  evicts them, finds them gone, they expire, or Redis fails (unreachable, and it may come
  back empty: the worker writes them again as prompts need them). Other workers publish
  their own. Blobs another worker's store evicted are found gone by a check: at most every
  ``CHECK_EVERY_S`` (worker's monotonic clock), a lookup or store also asks ``EXISTS`` of
  every blob the worker publishes (in the lookup's own round trip, or one pipelined call
  after a store) and withdraws those gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from corral.prefix.events import MEDIUM_REDIS
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.codec import read_header
from corral.worker.kvstore.redis_scripts import DISCARD, STORE, TOUCH, UNPOINT
from corral.worker.kvstore.stats import TierCounters, TierStats
from corral.worker.kvstore.tier import Candidate
from corral.worker.prefix_store import PrefixStore

PREFIX = "corral:kv"
LRU_KEY = f"{PREFIX}:lru"
SIZES_KEY = f"{PREFIX}:sizes"
POINTERS_KEY = f"{PREFIX}:ptrs"
TOTAL_KEY = f"{PREFIX}:bytes"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
#: How often, at most, a worker checks that the blobs it publishes still exist.
CHECK_EVERY_S = 5.0

def connect(url: str, *, timeout_s: float) -> redis.Redis:
    """A client whose every call gives up after ``timeout_s`` and never retries by itself."""
    client: redis.Redis = redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return client


class RedisTier:
    """The stack's Redis as a tier (see the module docstring)."""

    name = "redis"
    chunked = True

    def __init__(
        self,
        client: redis.Redis,
        *,
        compat: bytes,
        block_size: int,
        chunk_blocks: int,
        max_bytes: int,
        ttl_s: float,
        events: KVEventLog,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (this worker's wall clock) only ages what this worker publishes;
        Redis orders and expires blobs on its own clock. ``monotonic`` times the backoff
        after a failure and the checks that published blobs still exist."""
        self._client = client
        self._compat = compat
        self._namespace = f"{PREFIX}:{compat.hex()}"
        self._block_size = block_size
        self._chunk_blocks = chunk_blocks
        self.max_bytes = max_bytes
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._events = events
        self._clock = clock
        self._monotonic = monotonic
        self.counters = TierCounters(self.name)
        self._store_script = client.register_script(STORE)
        self._touch_script = client.register_script(TOUCH)
        self._unpoint_script = client.register_script(UNPOINT)
        self._discard_script = client.register_script(DISCARD)
        self._lock = threading.Lock()
        # What this worker wrote (for its KV events): chains, sizes, last use.
        self._mine: PrefixStore[float] = PrefixStore(max_bytes)
        self._down_until: float | None = None
        self._backoff_s = BACKOFF_FIRST_S
        self._next_check = monotonic() + CHECK_EVERY_S

    def blob_key(self, key: int) -> str:
        return f"{self._namespace}:b:{key:016x}"

    def pointer_key(self, block_hash: int) -> str:
        return f"{self._namespace}:p:{block_hash:016x}"

    # -- availability ------------------------------------------------------------------

    def available(self) -> bool:
        with self._lock:
            return self._down_until is None or self._monotonic() >= self._down_until

    def _failed(self, exc: Exception, doing: str) -> None:
        with self._lock:
            retry_in = self._backoff_s
            self._down_until = self._monotonic() + retry_in
            self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)
        self._forget_all()  # unreachable now, and it may come back empty
        self.counters.error(
            "unavailable",
            "Redis failed while %s (%s); prompts are recomputed, retrying in %.1f s",
            doing, exc, retry_in,
        )

    def _succeeded(self) -> None:
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = None
            self._backoff_s = BACKOFF_FIRST_S
        if was_down:
            self.counters.recovered("unavailable", "Redis answers again")

    # -- lookups (engine thread) -------------------------------------------------------

    def boundaries(self, hashes: Sequence[int]) -> list[int]:
        """Indexes in ``hashes`` of the chunk boundaries (the last block of each chunk)."""
        step = self._chunk_blocks
        return list(range(step - 1, len(hashes), step))

    def match(self, hashes: Sequence[int]) -> Candidate | None:
        indexes = self.boundaries(hashes)
        if not indexes or not self.available():
            return None
        checked = self._claim_check()
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.mget([self.pointer_key(hashes[i]) for i in indexes])
            for mine in checked:
                pipe.exists(self.blob_key(mine))
            values, *exists = pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc, "looking up a prefix")
            return None
        self._succeeded()
        self._withdraw_gone(checked, exists)
        self._expire_mine()
        for i, value in zip(reversed(indexes), reversed(values), strict=True):
            key = self._parse_pointer(value)
            if key is not None:
                return Candidate(key, i + 1, pointer=hashes[i])
        return None

    def _parse_pointer(self, value: Any) -> int | None:
        if not isinstance(value, bytes):
            return None
        blob, _, _tokens = value.partition(b" ")
        prefix = f"{self._namespace}:b:".encode()
        if not blob.startswith(prefix):
            return None
        try:
            return int(blob[len(prefix) :], 16)
        except ValueError:
            return None

    def load(self, candidate: Candidate) -> bytes | None:
        if not self.available():
            return None
        blob_key = self.blob_key(candidate.key)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(blob_key)
            self._touch_script(keys=self._touch_keys(blob_key), args=[self._ttl_ms], client=pipe)
            blob, _touched = pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc, "reading a prefix")
            return None
        self._succeeded()
        if blob is None:
            self._gone(candidate)
            return None
        with self._lock:
            if self._mine.touch(candidate.key):
                self._mine_used(candidate.key)
        return bytes(blob)

    def _gone(self, candidate: Candidate) -> None:
        """The pointer named a blob that expired or was evicted: a miss; clean the pointer."""
        self._forget(candidate.key)
        if candidate.pointer is None:
            return
        try:
            self._unpoint_script(
                keys=[self.pointer_key(candidate.pointer)], args=[self.blob_key(candidate.key)]
            )
        except redis.RedisError as exc:
            self._failed(exc, "deleting a dangling pointer")

    def discard(self, key: int, kind: str, reason: str) -> None:
        self.counters.error(kind, "dropped blob %s: %s", self.blob_key(key), reason)
        self._forget(key)
        if not self.available():
            return
        try:
            self._discard_script(
                keys=[LRU_KEY, SIZES_KEY, POINTERS_KEY, TOTAL_KEY], args=[self.blob_key(key)]
            )
        except redis.RedisError as exc:
            self._failed(exc, "deleting a bad blob")

    # -- writes (writer thread) --------------------------------------------------------

    def holds(self, chain: Sequence[int]) -> bool:
        with self._lock:
            found = self._mine.longest_match(chain)
        return found is not None and found.blocks == len(chain)

    def store(self, chain: Sequence[int], blob: bytes) -> None:
        if len(blob) > self.max_bytes or not self.available():
            return
        indexes = self.boundaries(chain)
        if not indexes or indexes[-1] != len(chain) - 1:
            raise ValueError(f"a stored prefix ends at a chunk boundary; {len(chain)} blocks do not")
        key = chain[-1]
        blob_key = self.blob_key(key)
        n_tokens = read_header(blob).n_tokens
        try:
            if self._touch_script(keys=self._touch_keys(blob_key), args=[self._ttl_ms]):
                dropped: list[bytes] = []  # another worker stored it: only touched
            else:
                pipe = self._client.pipeline(transaction=True)
                pipe.set(blob_key, blob, px=self._ttl_ms)
                self._store_script(
                    keys=[LRU_KEY, SIZES_KEY, POINTERS_KEY, TOTAL_KEY, blob_key,
                          *(self.pointer_key(chain[i]) for i in indexes)],
                    args=[len(blob), self.max_bytes, self._ttl_ms, n_tokens,
                          *((i + 1) * self._block_size for i in indexes)],
                    client=pipe,
                )
                _set, dropped = pipe.execute()
                self.counters.stored()
        except redis.RedisError as exc:
            self._failed(exc, "storing a prefix")
            return
        self._succeeded()
        self._remember(chain, len(blob), dropped)
        self._check_if_due()

    def _remember(self, chain: Sequence[int], nbytes: int, dropped: list[bytes]) -> None:
        prefix = f"{self._namespace}:b:".encode()
        gone = [int(b[len(prefix) :], 16) for b in dropped if b.startswith(prefix)]
        if dropped:
            self.counters.evicted(len(dropped))
        with self._lock, self._events.recording() as ledger:
            put = self._mine.put(chain, self._clock(), nbytes)
            if put.stored is not None:
                ledger.hold((self.name, put.stored.key), put.stored.block_hashes, MEDIUM_REDIS)
            for entry in put.removed:
                ledger.release((self.name, entry.key))
            for key in gone:
                if key != chain[-1] and self._mine.remove(key) is not None:
                    ledger.release((self.name, key))

    # -- what this worker wrote --------------------------------------------------------

    def _mine_used(self, key: int) -> None:
        """Record a use of ``key`` (lock held): its local expiry moves on. Whatever the
        re-put drops (or the entry itself, were it refused) is withdrawn."""
        with self._events.recording() as ledger:
            entry = self._mine.get(key)
            if entry is None:
                return
            self._mine.remove(key)
            put = self._mine.put(entry.block_hashes, self._clock(), entry.nbytes)
            for removed in put.removed:
                ledger.release((self.name, removed.key))
            if put.stored is None:
                ledger.release((self.name, key))

    def _claim_check(self) -> list[int]:
        """The blobs this worker publishes, when a check that they exist is due (then the
        next is ``CHECK_EVERY_S`` away); else nothing."""
        with self._lock:
            now = self._monotonic()
            if now < self._next_check:
                return []
            self._next_check = now + CHECK_EVERY_S
            return [entry.key for entry in self._mine.entries()]

    def _check_if_due(self) -> None:
        """When due, one pipelined ``EXISTS`` per published blob; withdraw those gone."""
        checked = self._claim_check()
        if not checked:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in checked:
                pipe.exists(self.blob_key(key))
            exists = pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc, "checking its prefixes")
            return
        self._withdraw_gone(checked, exists)

    def _withdraw_gone(self, checked: Sequence[int], exists: Sequence[Any]) -> None:
        """Stop publishing the blobs of ``checked`` that ``EXISTS`` found gone: another
        worker's store evicted them, or they expired."""
        gone = [key for key, found in zip(checked, exists, strict=True) if not found]
        if not gone:
            return
        with self._lock, self._events.recording() as ledger:
            for key in gone:
                if self._mine.remove(key) is not None:
                    ledger.release((self.name, key))

    def _expire_mine(self) -> None:
        """Stop publishing blobs unused for ``ttl_s``: Redis has expired them."""
        horizon = self._clock() - self._ttl_ms / 1000
        with self._lock, self._events.recording() as ledger:
            for entry in self._mine.entries():
                if entry.value <= horizon:
                    self._mine.remove(entry.key)
                    ledger.release((self.name, entry.key))

    def _forget(self, key: int) -> None:
        with self._lock, self._events.recording() as ledger:
            if self._mine.remove(key) is not None:
                ledger.release((self.name, key))

    def _forget_all(self) -> None:
        with self._lock, self._events.recording() as ledger:
            for entry in self._mine.clear():
                ledger.release((self.name, entry.key))

    def stats(self) -> TierStats:
        with self._lock:
            entries, nbytes = len(self._mine), self._mine.nbytes
        return self.counters.snapshot(entries=entries, nbytes=nbytes)

    def close(self) -> None:
        self._forget_all()
        self._client.close()

    # -- helpers -----------------------------------------------------------------------

    def _touch_keys(self, blob_key: str) -> list[str]:
        return [blob_key, LRU_KEY, POINTERS_KEY, SIZES_KEY, TOTAL_KEY]
