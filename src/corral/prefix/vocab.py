"""A GGUF model's tokenizer alone: llama.cpp's vocabulary, loaded without the weights.

The router loads it to tokenize prompts exactly as a llama.cpp worker does (same
library, same vocabulary, same flags), so that both compute the same block hashes. A
vocabulary-only load reads no tensors (a fraction of a second, tens of MB) and does not
build the compute backends, so it needs none of the worker's AMX workaround.

:meth:`GgufVocab.tokenize` runs in llama.cpp with the GIL released (ctypes), so callers
run it on a thread pool, never on the event loop.
"""

from __future__ import annotations

import ctypes
from array import array
from dataclasses import dataclass
from pathlib import Path

import llama_cpp._logger as llama_logger
import llama_cpp.llama_cpp as llama_lib
from llama_cpp._internals import LlamaModel
from llama_cpp._utils import suppress_stdout_stderr

from corral.errors import ModelSourceError

#: Tokens llama.cpp splits out of the text before running the tokenizer proper.
SPECIAL_ATTRS = (
    llama_lib.LLAMA_TOKEN_ATTR_CONTROL
    | llama_lib.LLAMA_TOKEN_ATTR_USER_DEFINED
    | llama_lib.LLAMA_TOKEN_ATTR_UNKNOWN
)
TEMPLATE_KEY = "tokenizer.chat_template"


@dataclass(frozen=True, slots=True)
class SpecialToken:
    id: int
    text: str
    attr: int


class GgufVocab:
    """llama.cpp's tokenizer for one GGUF file (close it with :meth:`close`)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ModelSourceError(f"no GGUF file at {path}")
        llama_logger.set_verbose(False)
        with suppress_stdout_stderr(disable=False):
            llama_lib.llama_backend_init()
        params = llama_lib.llama_model_default_params()
        params.vocab_only = True
        try:
            self._model = LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError as exc:
            raise ModelSourceError(
                f"llama.cpp cannot read the vocabulary of {path}: {exc}"
            ) from exc
        self._vocab = self._model.vocab
        self.path = path
        self.type = int(llama_lib.llama_vocab_type(self._vocab))
        self.size = int(llama_lib.llama_vocab_n_tokens(self._vocab))
        self.add_bos = bool(llama_lib.llama_vocab_get_add_bos(self._vocab))
        self.add_eos = bool(llama_lib.llama_vocab_get_add_eos(self._vocab))
        self.bos = int(llama_lib.llama_vocab_bos(self._vocab))
        self.eos = int(llama_lib.llama_vocab_eos(self._vocab))
        metadata = self._model.metadata()
        # Read as the worker reads it (Llama.metadata), so that both render alike.
        self.chat_template: str | None = metadata.get(TEMPLATE_KEY) or None
        self.add_space_prefix = metadata.get("tokenizer.ggml.add_space_prefix", "true") == "true"

    @property
    def is_spm(self) -> bool:
        return self.type == llama_lib.LLAMA_VOCAB_TYPE_SPM

    @property
    def is_bpe(self) -> bool:
        return self.type == llama_lib.LLAMA_VOCAB_TYPE_BPE

    def text(self, token: int) -> str:
        """A token's text as the worker reads it (``""`` for no token)."""
        if token < 0:
            return ""
        raw: bytes = llama_lib.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace")

    def special_tokens(self) -> list[SpecialToken]:
        """Every token llama.cpp splits out before tokenizing (control, user-defined, unknown)."""
        found: list[SpecialToken] = []
        for token in range(self.size):
            attr = int(llama_lib.llama_vocab_get_attr(self._vocab, token))
            if attr & SPECIAL_ATTRS:
                raw: bytes = llama_lib.llama_vocab_get_text(self._vocab, token)
                try:
                    found.append(SpecialToken(token, raw.decode("utf-8"), attr))
                except UnicodeDecodeError:
                    found.append(SpecialToken(token, "", attr))  # never used as a marker
        return found

    def token_texts(self) -> list[str]:
        """Every token's text as the vocabulary spells it (SPM: spaces as U+2581)."""
        return [
            llama_lib.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")
            for token in range(self.size)
        ]

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for in text, special tokens spelled out (as
        ``llama_token_to_piece`` gives them to the worker's detokenizer)."""
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            count = int(llama_lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, True))
            if count >= 0:
                return buffer.raw[:count]
            size = -count

    def tokenize(self, text: str, *, add_special: bool) -> array[int]:
        """``llama_tokenize(text, add_special, parse_special=True)``, as the worker calls it."""
        data = text.encode("utf-8", errors="replace")
        capacity = len(data) + 8  # a token covers at least a byte; + BOS/EOS/space prefix
        while True:
            buffer = (llama_lib.llama_token * capacity)()
            count = int(
                llama_lib.llama_tokenize(
                    self._vocab, data, len(data), buffer, capacity, add_special, True
                )
            )
            if count >= 0:
                tokens: array[int] = array("i")
                tokens.frombytes(
                    ctypes.string_at(buffer, count * ctypes.sizeof(llama_lib.llama_token))
                )
                return tokens
            capacity = -count

    def close(self) -> None:
        self._model.close()  # type: ignore[no-untyped-call]
