"""Which stored states a llama.cpp context can load: one 16-byte digest of its setup.

A sequence state is raw KV cells. Loading it into a context built differently either fails
(llama.cpp checks a few sizes) or, worse, succeeds and computes garbage. So every stored
state carries the digest of everything that shapes those cells, and is loaded only by a
context with the same digest:

- the model file's sha256 (same weights, same quantization);
- llama-cpp-python's version (its bundled llama.cpp decides the state format);
- the context size, the K and V cache types, flash attention (which stores V transposed or
  not), the number of sequences and whether their KV cache is unified;
- the prefix block size and the model name, which name the prefixes
  (:func:`corral.prefix.hashing.block_hashes` is seeded with the name).

Hashing a multi-gigabyte model file takes seconds, so its sha256 is cached in a small
sidecar file keyed by the file's path, size and modification time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

import llama_cpp
from llama_cpp import Llama

from corral.worker.kvstore.codec import COMPAT_BYTES

logger = logging.getLogger(__name__)

_READ_BYTES = 1 << 20


class ContextSetup(NamedTuple):
    """What makes a state loadable, besides the model file (see the module docstring)."""

    model_name: str
    block_size: int
    n_ctx: int
    type_k: int
    type_v: int
    flash_attn: int
    n_seq_max: int
    kv_unified: bool
    engine_version: str = llama_cpp.__version__

    @classmethod
    def of(cls, llama: Llama, *, model_name: str, block_size: int) -> ContextSetup:
        params = llama.context_params
        return cls(
            model_name=model_name,
            block_size=block_size,
            n_ctx=llama.n_ctx(),
            type_k=int(params.type_k),
            type_v=int(params.type_v),
            flash_attn=int(getattr(params, "flash_attn_type", getattr(params, "flash_attn", 0))),
            n_seq_max=int(params.n_seq_max),
            kv_unified=bool(params.kv_unified),
        )


def compat_digest(model_sha256: str, setup: ContextSetup) -> bytes:
    """The 16-byte digest stored states are stamped with."""
    fields = {"format": "corral-kv/1", "model_sha256": model_sha256, **setup._asdict()}
    encoded = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(encoded).digest()[:COMPAT_BYTES]


def file_sha256(path: Path, *, cache_dir: Path | None = None) -> str:
    """The hex sha256 of ``path``; remembered in ``cache_dir`` while size and mtime hold."""
    stat = path.stat()
    resolved = str(path.resolve())
    key: dict[str, object] = {"path": resolved, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = None
    if cache_dir is not None:
        name = hashlib.sha256(resolved.encode()).hexdigest()[:32]
        sidecar = cache_dir / f"{name}.json"
        cached = _read_sidecar(sidecar)
        if cached is not None and all(cached.get(k) == v for k, v in key.items()):
            digest = cached.get("sha256")
            if isinstance(digest, str):
                return digest
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_BYTES):
            digest.update(chunk)
    value = digest.hexdigest()
    if sidecar is not None:
        _write_sidecar(sidecar, {**key, "sha256": value})
    return value


def _read_sidecar(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.info("ignoring the digest cache %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write_sidecar(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.info("cannot cache the model digest in %s (%s); it is recomputed at each load", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
