"""The disk tier: prefix states as files in one directory, byte-bounded, kept across restarts.

Contract (see :mod:`corral.worker.kvstore.tier` for the shared part):

- One file per stored prefix, ``<key as 16 hex digits>.kv``, holding one
  :mod:`~corral.worker.kvstore.codec` blob. Writes are atomic: a temporary file in the same
  directory, written, fsynced, then renamed over the name (and the directory fsynced), so
  a reader or a restart sees a whole file or none. Temporary files left by a crash are
  removed once they are old.
- An index in memory (a :class:`~corral.worker.prefix_store.PrefixStore` of the files'
  block chains and sizes) answers ``match`` without touching the disk. :meth:`DiskTier.open`
  builds it from the files' headers and tokens, oldest first; files of another setup
  (compatibility digest), damaged headers and files that other files contain are deleted.
- Least recently used goes first: a load touches the file's mtime (so the order survives
  a restart) and the index. Past ``max_bytes`` the oldest files are deleted.
- Replicas of a model on one machine may share the directory: when its mtime changes the
  index picks up files others wrote, and a file another process deleted is a miss.
  Each process keeps the files *it indexes* within ``max_bytes``, so the shared total
  stays about at the bound.
- A full or unwritable disk is counted (``write``) and logged once; the worker carries on.

Thread-safety: the engine thread matches and loads, the writer thread stores; the index
and the events are changed under one lock. File reads and writes happen outside it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from corral.prefix.events import MEDIUM_DISK
from corral.worker.kv_events import KVEventLog
from corral.worker.kvstore.codec import HEADER, BlobError, read_header, read_tokens
from corral.worker.kvstore.stats import TierCounters, TierStats
from corral.worker.kvstore.tier import Candidate
from corral.worker.prefix_store import Entry, PrefixStore

logger = logging.getLogger(__name__)

SUFFIX = ".kv"
TMP_PREFIX = ".tmp-"
#: A temporary file older than this is debris from a crash.
STALE_TMP_S = 600.0


class DiskTier:
    """Prefix states in ``directory`` under ``max_bytes`` (see the module docstring)."""

    name = "disk"
    chunked = False

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        compat: bytes,
        block_size: int,
        hashes: Callable[[Sequence[int]], list[int]],
        events: KVEventLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._compat = compat
        self._block_size = block_size
        self._hashes = hashes
        self._events = events
        self._clock = clock
        self._index: PrefixStore[int] = PrefixStore(max_bytes)  # value: the state's tokens
        self._lock = threading.Lock()
        self._dir_mtime_ns: int | None = None
        self.counters = TierCounters(self.name)

    # -- the index ---------------------------------------------------------------------

    def path(self, key: int) -> Path:
        return self.directory / f"{key:016x}{SUFFIX}"

    def open(self) -> None:
        """Create the directory if needed and index the files in it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.counters.error("write", "cannot create %s (%s); the tier stays empty", self.directory, exc)
            return
        self._scan()

    def _scan(self) -> None:
        """Index the files not indexed yet, oldest first; forget indexed files that are gone."""
        try:
            mtime_ns = self.directory.stat().st_mtime_ns
            names = os.listdir(self.directory)
        except OSError as exc:
            self.counters.error("read", "cannot list %s: %s", self.directory, exc)
            return
        self._dir_mtime_ns = mtime_ns
        files: dict[int, os.stat_result] = {}
        for name in names:
            if name.startswith(TMP_PREFIX):
                self._remove_if_stale(self.directory / name)
                continue
            key = _key_of(name)
            if key is None:
                continue
            try:
                files[key] = os.stat(self.directory / name)
            except FileNotFoundError:
                continue
        with self._lock:
            known = {entry.key for entry in self._index.entries()}
        for key in known - files.keys():
            if not self.path(key).exists():
                self._forget(key)
        for key in sorted(files.keys() - known, key=lambda k: files[k].st_mtime_ns):
            self._adopt(key, files[key].st_size)

    def _changed(self) -> bool:
        try:
            return self.directory.stat().st_mtime_ns != self._dir_mtime_ns
        except OSError:
            return False

    def _adopt(self, key: int, size: int) -> None:
        """Index the file of ``key`` from its header and tokens (delete it if unusable)."""
        path = self.path(key)
        try:
            with path.open("rb") as handle:
                head = handle.read(HEADER.size)
                header = read_header(head)
                tokens = read_tokens(header, head + handle.read(header.tokens_bytes))
            if header.total_bytes != size:
                raise BlobError(f"{size} bytes, the header says {header.total_bytes}")
            if header.compat != self._compat:
                self._delete(path, "incompatible", "deleted %s: written by another setup", path)
                return
        except FileNotFoundError:
            return
        except BlobError as exc:
            self._delete(path, exc.kind, "deleted %s: %s", path, exc)
            return
        except OSError as exc:
            self.counters.error("read", "cannot read %s: %s", path, exc)
            return
        chain = self._chain(tokens)
        if not chain or chain[-1] != key:
            self._delete(path, "corrupt", "deleted %s: its name does not match its tokens", path)
            return
        self._put(chain, len(tokens), size, tokens.tolist())

    def _chain(self, tokens: np.ndarray) -> list[int]:
        blocks = len(tokens) // self._block_size
        return self._hashes(tokens[: blocks * self._block_size].tolist())

    def _put(
        self, chain: Sequence[int], n_tokens: int, size: int, tokens: Sequence[int] | None = None
    ) -> bool:
        """Index a written file; delete the files it evicts or contains. False if refused."""
        with self._lock, self._events.recording() as ledger:
            put = self._index.put(chain, n_tokens, size)
            if put.stored is not None:
                ledger.hold(
                    (self.name, put.stored.key), put.stored.block_hashes, MEDIUM_DISK, tokens
                )
            for entry in put.removed:
                ledger.release((self.name, entry.key))
        for entry in put.removed:
            _unlink(self.path(entry.key))
        if put.removed:
            self.counters.evicted(len(put.removed))
        if put.stored is None:
            # Refused: larger than the tier, or a file already indexed contains it. Unless
            # that file is this very one (another replica wrote the same prefix), delete it.
            with self._lock:
                same_file = self._index.get(chain[-1]) is not None
            if not same_file:
                _unlink(self.path(chain[-1]))
            return False
        return True

    def _forget(self, key: int) -> None:
        with self._lock, self._events.recording() as ledger:
            if self._index.remove(key) is not None:
                ledger.release((self.name, key))

    # -- the tier ----------------------------------------------------------------------

    def available(self) -> bool:
        return True

    def holds(self, chain: Sequence[int]) -> bool:
        """Whether an indexed file holds all of ``chain`` (a use of it, if so)."""
        with self._lock:
            found = self._index.longest_match(chain)
        return found is not None and found.blocks == len(chain)

    def match(self, hashes: Sequence[int]) -> Candidate | None:
        if self._changed():
            self._scan()
        with self._lock:
            found = self._index.longest_match(hashes)
        return None if found is None else Candidate(found.entry.key, found.blocks)

    def load(self, candidate: Candidate) -> bytes | None:
        path = self.path(candidate.key)
        try:
            blob = path.read_bytes()
            os.utime(path)  # the LRU order survives a restart
        except FileNotFoundError:
            self._forget(candidate.key)  # another replica evicted it
            return None
        except OSError as exc:
            self.counters.error("read", "cannot read %s: %s", path, exc)
            return None
        self.counters.recovered("read")
        with self._lock:
            self._index.touch(candidate.key)
        return blob

    def discard(self, key: int, kind: str, reason: str) -> None:
        self._forget(key)
        self._delete(self.path(key), kind, "deleted %s: %s", self.path(key), reason)

    def store(self, chain: Sequence[int], blob: bytes) -> None:
        key = chain[-1]
        if self.holds(chain) or len(blob) > self.max_bytes:
            return
        path = self.path(key)
        tmp = self.directory / f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{key:016x}"
        try:
            _write_atomically(tmp, path, blob)
        except OSError as exc:
            _unlink(tmp)
            self.counters.error("write", "cannot write %s (%s); the worker carries on without it", path, exc)
            return
        self.counters.recovered("write", f"writing to {self.directory} works again")
        if self._put(chain, read_header(blob).n_tokens, len(blob)):
            self.counters.stored()

    def stats(self) -> TierStats:
        with self._lock:
            entries, nbytes = len(self._index), self._index.nbytes
        return self.counters.snapshot(entries=entries, nbytes=nbytes)

    def entries(self) -> list[Entry[int]]:
        """The indexed files, least recently used first."""
        with self._lock:
            return self._index.entries()

    def close(self) -> None:
        """Stop publishing the files' blocks (they stay on disk for the next start)."""
        with self._lock, self._events.recording() as ledger:
            for entry in self._index.clear():
                ledger.release((self.name, entry.key))

    # -- files -------------------------------------------------------------------------

    def _delete(self, path: Path, kind: str, message: str, *args: object) -> None:
        _unlink(path)
        self.counters.error(kind, message, *args)

    def _remove_if_stale(self, path: Path) -> None:
        try:
            if self._clock() - path.stat().st_mtime > STALE_TMP_S:
                path.unlink()
        except OSError:
            return


def _key_of(name: str) -> int | None:
    if not name.endswith(SUFFIX) or len(name) != 16 + len(SUFFIX):
        return None
    try:
        return int(name[:16], 16)
    except ValueError:
        return None


def _write_atomically(tmp: Path, path: Path, blob: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.warning("cannot delete %s: %s", path, exc)
