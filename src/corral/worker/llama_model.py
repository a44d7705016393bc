"""A GGUF model in llama-cpp-python: loading it safely, and reading its vocabulary."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path

import llama_cpp.llama_cpp as llama_lib
import numpy as np
import numpy.typing as npt
from llama_cpp import Llama

from corral.errors import InvalidRequestError

#: Serializes the short window in which load_llama swaps llama_model_default_params.
_LOAD_LOCK = threading.Lock()


def load_llama(path: Path, *, context_length: int, threads: int) -> Llama:
    """Load a GGUF model with llama.cpp's *extra buffer types* off and a scratch sequence.

    llama.cpp built with ``-march=native`` on a CPU that reports AMX repacks weights
    for AMX tiles; where the hypervisor does not actually enable AMX (this project's
    VMs) every batched decode dies with a general protection fault in
    ``ggml_backend_amx_mul_mat``. ``Llama()`` does not expose ``use_extra_bufts``,
    so the default model parameters are patched for the duration of the load only.

    The context gets two sequences in one unified KV cache (``n_seq_max=2``,
    ``kv_unified``): llama-cpp-python runs on sequence 0, and sequence 1 lets a prefix
    of it be copied out (see :mod:`corral.worker.seq_state`). Unified, both share the
    one cache of ``context_length`` cells, so sequence 0 keeps the whole context.
    """
    model_defaults = llama_lib.llama_model_default_params
    context_defaults = llama_lib.llama_context_default_params

    def model_params() -> llama_lib.llama_model_params:
        params: llama_lib.llama_model_params = model_defaults()
        params.use_extra_bufts = False
        return params

    def context_params() -> llama_lib.llama_context_params:
        params: llama_lib.llama_context_params = context_defaults()
        params.n_seq_max = 2
        params.kv_unified = True
        return params

    with _LOAD_LOCK:
        llama_lib.llama_model_default_params = model_params
        llama_lib.llama_context_default_params = context_params
        try:
            return Llama(
                model_path=str(path),
                n_ctx=context_length,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        finally:
            llama_lib.llama_model_default_params = model_defaults
            llama_lib.llama_context_default_params = context_defaults


class LlamaVocab:
    """Per-token facts from llama.cpp's vocabulary; pieces are memoized (engine thread)."""

    def __init__(self, llama: Llama) -> None:
        self._vocab = llama_lib.llama_model_get_vocab(llama.model)
        self._pieces: dict[int, bytes] = {}
        self.size = llama.n_vocab()

    def is_eog(self, token: int) -> bool:
        return bool(llama_lib.llama_vocab_is_eog(self._vocab, token))

    def piece(self, token: int) -> bytes:
        """The bytes of one token as generated text (control tokens give b"")."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._render(token)
        return piece

    def text(self, token: int) -> str:
        return (
            "" if token < 0 else llama_lib.llama_vocab_get_text(self._vocab, token).decode("utf-8")
        )

    def _render(self, token: int) -> bytes:
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            written = llama_lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
            if written >= 0:
                return buffer.raw[:written]
            size = -written


def cached_prefix(llama: Llama, prompt: Sequence[int]) -> int:
    """How many prompt tokens ``llama.generate(reset=True)`` takes from the KV cache.

    Mirrors its rule: the longest common prefix with the tokens already evaluated,
    less one when the whole prompt matches (that token is replayed to get logits),
    unless exactly the prompt and nothing more is cached and its logits are live.
    """
    n_cached = llama.n_tokens
    common = common_prefix(llama.input_ids[:n_cached], prompt)
    if common == len(prompt) and (n_cached != common or llama._requires_eval):
        return common - 1
    return common


def common_prefix(tokens: npt.NDArray[np.intc], prompt: Sequence[int]) -> int:
    """How many leading tokens ``tokens`` and ``prompt`` share."""
    limit = min(len(tokens), len(prompt))
    if limit == 0:
        return 0
    mismatch = np.flatnonzero(tokens[:limit] != np.asarray(prompt[:limit], dtype=tokens.dtype))
    return int(mismatch[0]) if mismatch.size else limit


def check_ids(tokens: list[int], vocab_size: int) -> list[int]:
    for token in tokens:
        if not 0 <= token < vocab_size:
            raise InvalidRequestError(
                f"token id {token} is outside the vocabulary (0 to {vocab_size - 1})",
                param="tokens",
            )
    return tokens
