"""The compatibility digest: every input changes it; the model's sha256 is cached by size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from corral.worker.kvstore.compat import ContextSetup, compat_digest, file_sha256

SETUP = ContextSetup(
    model_name="smol", block_size=16, n_ctx=4096, type_k=1, type_v=1, flash_attn=0,
    n_seq_max=2, kv_unified=True, engine_version="0.3.36",
)


def test_every_field_of_the_setup_changes_the_digest() -> None:
    base = compat_digest("a" * 64, SETUP)
    assert len(base) == 16
    assert compat_digest("a" * 64, SETUP) == base
    assert compat_digest("b" * 64, SETUP) != base
    changes = {
        "model_name": "other", "block_size": 32, "n_ctx": 2048, "type_k": 8, "type_v": 8,
        "flash_attn": 1, "n_seq_max": 1, "kv_unified": False, "engine_version": "0.3.37",
    }
    digests = {compat_digest("a" * 64, SETUP._replace(**{k: v})) for k, v in changes.items()}
    assert base not in digests and len(digests) == len(changes)


def test_the_file_digest_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights" * 1000)
    cache = tmp_path / "digests"
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    assert file_sha256(model, cache_dir=cache) == expected
    (sidecar,) = cache.iterdir()
    # A doctored cache entry proves the cache is read while size and mtime hold ...
    entry = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**entry, "sha256": "cached"}))
    assert file_sha256(model, cache_dir=cache) == "cached"
    # ... and ignored once the file changes.
    model.write_bytes(b"other weights" * 1000)
    os.utime(model, ns=(1, 1))
    assert file_sha256(model, cache_dir=cache) == hashlib.sha256(model.read_bytes()).hexdigest()


def test_an_unwritable_cache_only_costs_a_recompute(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"w" * 100)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert file_sha256(model, cache_dir=blocker / "digests") == hashlib.sha256(b"w" * 100).hexdigest()
