"""A model's prompts -> the exact tokens its llama.cpp worker computes, cheaply.

The worker (``LlamaCppEngine._tokenize``) renders chat messages with the model's own chat
template, adds BOS unless the rendered text starts with it, and calls llama.cpp with
special-token parsing on; a text completion prompt is tokenized with BOS where the
vocabulary wants one. :class:`PromptTokenizer` does the same with the same library and
vocabulary, but piece by piece (:mod:`corral.prefix.segments`), with every piece's
tokens cached: a conversation re-sent with one more turn tokenizes only the new turn.

Rendering and cache lookups are cheap and run on the caller's thread (the event loop);
:meth:`PromptTokenizer.tokenize_pieces` is the llama.cpp work, for a thread pool.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from corral.errors import InvalidRequestError
from corral.prefix.hashing import token_bytes, token_ids
from corral.prefix.prompt import ChatPrompt, Prompt, TextPrompt, TokenPrompt
from corral.prefix.rendering import MessageRenderer
from corral.prefix.segments import LSTRIP_RSTRIP, Piece, PieceCache, Plan, Segmenter
from corral.prefix.vocab import GgufVocab
from corral.sources import resolve_source
from corral.worker.chat_template import ChatTemplate

_SAMPLE_CHAT = (
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "What is  2+2?\n"},
    {"role": "assistant", "content": " 4 ."},
    {"role": "user", "content": "And   é😀?"},
)


class PromptTokenizer:
    """Tokenizes prompts as the model's worker does; owns the vocabulary (:meth:`close`)."""

    def __init__(self, vocab: GgufVocab, *, cache_bytes: int) -> None:
        self.vocab = vocab
        self.template = (
            ChatTemplate(
                vocab.chat_template,
                bos_token=vocab.text(vocab.bos),
                eos_token=vocab.text(vocab.eos),
            )
            if vocab.chat_template
            else None
        )
        self.renderer = None if self.template is None else MessageRenderer(self.template)
        samples = [] if self.template is None else [self.template.render(_SAMPLE_CHAT)]
        self.segmenter = Segmenter(vocab, samples=samples)
        self.cache = PieceCache(cache_bytes)
        self._markers = {
            text: Piece(text, array("i", [token])) for text, token in self.segmenter.markers.items()
        }
        self._pieces: dict[int, bytes] = {}  # token id -> its bytes, filled as decoded
        #: Whether every text's tokens decode back to exactly that text, so that text alone
        #: can rule out a held block (:meth:`decode`). Only byte-level BPE guarantees it, and
        #: only without special tokens that strip the spaces around them; SentencePiece
        #: does not (llama.cpp reads a "▁" in the text as a space). Checked on samples too.
        self.decodes_exactly = (
            self.segmenter.segmented
            and vocab.is_bpe
            and not any(special.attr & LSTRIP_RSTRIP for special in vocab.special_tokens())
            and self._decodes_exactly(samples)
        )

    @classmethod
    def load(cls, source: str, *, cache_bytes: int) -> PromptTokenizer:
        """From a stack file's ``source`` (blocking: reads the GGUF's vocabulary)."""
        return cls(GgufVocab(resolve_source(source).weights), cache_bytes=cache_bytes)

    def close(self) -> None:
        self.vocab.close()

    def render(self, prompt: ChatPrompt | TextPrompt, *, whole: bool = False) -> tuple[str, bool] | None:
        """The prompt text and whether llama.cpp adds special tokens (BOS) to it; None when
        the worker would refuse it (no chat template, or the template fails). ``whole``:
        with the template itself, as the worker does, not message by message."""
        if isinstance(prompt, TextPrompt):
            return prompt.text, True
        if self.template is None or self.renderer is None:
            return None
        try:
            text = self.template.render(prompt.messages) if whole else self.renderer.render(prompt.messages)
        except InvalidRequestError:
            return None
        return text, not text.startswith(self.template.bos_token)

    def plan(self, prompt: ChatPrompt | TextPrompt) -> Plan | None:
        """How to tokenize the prompt (None where the worker would refuse it). A chat prompt
        is planned message by message from cached plans where the template allows it: a
        conversation re-sent with one more turn renders and plans only that turn."""
        split = self._message_parts(prompt) if isinstance(prompt, ChatPrompt) else None
        if split is not None:
            planned = self.segmenter.plan_parts(split[0], add_special=split[1])
            if planned is not None:
                return planned
        rendered = self.render(prompt)
        if rendered is None:
            return None
        text, add_special = rendered
        return self.segmenter.plan(text, add_special=add_special)

    def most_tokens(self, prompt: ChatPrompt) -> int | None:
        """At most how many tokens a chat prompt has, without planning it: its message parts
        seen before count their cached tokens (exactly), the others their UTF-8 bytes. None
        where the prompt would not be planned part by part."""
        if not self.segmenter.segmented or (self.vocab.is_spm and self.vocab.add_space_prefix):
            return None  # (a space token may precede each fragment: more tokens than bytes)
        split = self._message_parts(prompt)
        if split is None:
            return None
        parts, add_special = split
        count = 1 if add_special and self.vocab.add_bos else 0
        cached = self.cache.get
        for number, part in enumerate(parts):
            if number and part and not self.segmenter.starts_with_marker(part):
                return None  # llama.cpp may not cut there: only the whole text is exact
            piece = cached(part) if part else None
            count += piece.count if piece is not None else len(part.encode())
        return count

    def _message_parts(self, prompt: ChatPrompt) -> tuple[list[str], bool] | None:
        """The rendered prompt as cached parts (one per message, then the generation prompt)
        and whether llama.cpp adds BOS to it; None where it must be rendered whole."""
        if self.renderer is None or self.template is None:
            return None
        parts = self.renderer.parts(prompt.messages)
        bos = self.template.bos_token
        if parts is None or len(parts[0]) < len(bos):
            return None
        return parts, not parts[0].startswith(bos)

    def known(self, text: str) -> Piece | None:
        """The piece if it needs no tokenizing (a marker, or cached)."""
        marker = self._markers.get(text)
        return marker if marker is not None else self.cache.get(text)

    def decode(self, tokens: bytes) -> bytes:
        """The text (UTF-8 bytes, maybe cut inside a character) of tokens given as hashed
        (:func:`corral.prefix.hashing.token_bytes`); exact for a plan's pieces where
        :attr:`decodes_exactly`."""
        table = self._pieces
        out = []
        for token in token_ids(tokens):
            piece = table.get(token)
            if piece is None:
                piece = table[token] = self.vocab.piece(token) if 0 <= token < self.vocab.size else b"\0"
            out.append(piece)
        return b"".join(out)

    def _decodes_exactly(self, samples: Sequence[str]) -> bool:
        for text in [*samples, *self.segmenter.probes()]:
            for piece in self.segmenter.plan(text, add_special=False).pieces:
                tokens = self.vocab.tokenize(piece, add_special=False)
                if self.decode(token_bytes(tokens)) != piece.encode("utf-8"):
                    return False
        return True

    def tokenize_pieces(self, pieces: Sequence[str], *, add_special: bool) -> list[array[int]]:
        """llama.cpp on each piece: the slow part, for a worker thread (the GIL is released)."""
        return [self.vocab.tokenize(piece, add_special=add_special) for piece in pieces]

    def remember(self, text: str, tokens: array[int]) -> Piece:
        return self.cache.put(text, tokens)

    def parts(self, plan: Plan) -> WholeParts:
        """A walk over ``plan``'s multi-piece parts, each looked up (and cached) whole."""
        return WholeParts(self.cache, plan)

    def tokenize(self, prompt: Prompt) -> list[int] | None:
        """The whole prompt in one llama.cpp call, exactly as the worker does (no cache)."""
        if isinstance(prompt, TokenPrompt):
            return list(prompt.tokens)  # the worker uses ids as they are
        rendered = self.render(prompt, whole=True)
        if rendered is None:
            return None
        text, add_special = rendered
        return list(self.vocab.tokenize(text, add_special=add_special))


class WholeParts:
    """A plan's parts of several pieces (a long chat message), taken whole: a walk over the
    plan's pieces asks :meth:`at` at each position for a cached part starting there (its
    tokens are its pieces' together), and reports each piece it adds (:meth:`added`); a
    part whose pieces were all added in a row is cached whole. So a conversation's history
    costs one lookup per message, not one per piece. One per walk."""

    __slots__ = ("_cache", "_end", "_next", "_starts", "_text", "_tokens")

    def __init__(self, cache: PieceCache, plan: Plan) -> None:
        self._cache = cache
        self._starts = plan.parts
        # the part being walked piece by piece (None: none): its text, next position, end
        self._text: str | None = None
        self._next = self._end = 0
        self._tokens: list[bytes] = []

    def at(self, position: int) -> tuple[Piece, int] | None:
        """The cached part starting at ``position`` and how many pieces it stands for."""
        part = self._starts.get(position) if self._starts else None
        if part is None:
            return None
        count, text = part
        whole = self._cache.get(text)
        if whole is None:
            self._text, self._next, self._end, self._tokens = text, position, position + count, []
            return None
        return whole, count

    def added(self, position: int, piece: Piece) -> None:
        """The walk added the piece at ``position``."""
        if self._text is None:
            return
        if position != self._next:
            self._text = None  # a piece was skipped: the part's tokens are not all here
            return
        self._tokens.append(piece.tokens)
        self._next += 1
        if self._next == self._end:
            self._cache.put(self._text, b"".join(self._tokens))
            self._text = None
