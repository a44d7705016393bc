"""The KV of a token prefix, copied out of llama.cpp's live sequence and put back later.

This uses llama.cpp's *sequence* state API (``llama_state_seq_get_data`` /
``llama_state_seq_set_data``), which carries only the KV cells of one sequence: about
23 KB per token for SmolLM2-135M, copied in ~10 ms for 1.5k tokens. (``Llama.save_state()``
carries the whole context, logits included: about 4x more.)

llama-cpp-python runs everything on sequence 0 (:data:`LIVE_SEQ`). To copy a *prefix* of it
without disturbing it (it may also hold the generated tokens, which the next turn of a
conversation reuses), the prefix's cells are shared with a scratch sequence
(``llama_memory_seq_cp``: in a unified KV cache that tags cells, it copies no data), the
scratch sequence is serialized, then dropped. That needs a context with two sequences and
a unified KV cache, which :func:`~corral.worker.llama_model.load_llama` creates.

Restoring replaces sequence 0 with the stored cells, then makes llama-cpp-python's
bookkeeping agree (``input_ids``, ``n_tokens``, and a flag that the logits are stale), so
that ``Llama.generate()`` finds the longest common prefix, drops the cells past it and
prefills only the rest.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import llama_cpp.llama_cpp as llama_lib
import numpy as np
import numpy.typing as npt
from llama_cpp import Llama

LIVE_SEQ = 0
SCRATCH_SEQ = 1


class SeqState(NamedTuple):
    """The KV cells of ``tokens`` (positions 0 to len - 1), as llama.cpp serialized them."""

    tokens: npt.NDArray[np.intc]
    data: ctypes.Array[ctypes.c_uint8]

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.tokens.nbytes


def capture_prefix(llama: Llama, n_tokens: int) -> SeqState:
    """The KV of the first ``n_tokens`` evaluated tokens of the live sequence (unchanged)."""
    if not 0 < n_tokens <= llama.n_tokens:
        raise ValueError(f"cannot copy {n_tokens} tokens: {llama.n_tokens} are evaluated")
    memory = llama_lib.llama_get_memory(llama.ctx)
    llama_lib.llama_memory_seq_cp(memory, LIVE_SEQ, SCRATCH_SEQ, 0, n_tokens)
    try:
        size = llama_lib.llama_state_seq_get_size(llama.ctx, SCRATCH_SEQ)
        data = (ctypes.c_uint8 * size)()
        written = llama_lib.llama_state_seq_get_data(llama.ctx, data, size, SCRATCH_SEQ)
    finally:
        llama_lib.llama_memory_seq_rm(memory, SCRATCH_SEQ, -1, -1)
    if written != size:
        raise RuntimeError(f"llama.cpp wrote {written} of {size} bytes of sequence state")
    return SeqState(llama.input_ids[:n_tokens].copy(), data)


def restore(llama: Llama, state: SeqState) -> bool:
    """Make the live sequence hold ``state``; False (and an empty context) if llama.cpp refused."""
    read = llama_lib.llama_state_seq_set_data(llama.ctx, state.data, len(state.data), LIVE_SEQ)
    if read != len(state.data):
        llama.reset()  # type: ignore[no-untyped-call]  # the next eval clears sequence 0
        return False
    n_tokens = len(state.tokens)
    llama.input_ids[:n_tokens] = state.tokens
    llama.n_tokens = n_tokens
    llama._requires_eval = True  # the logits are not those of the restored tokens
    return True
