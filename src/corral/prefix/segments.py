r"""Tokenize a prompt piece by piece, where llama.cpp itself cuts it, and cache the pieces.

llama.cpp tokenizes a text in two steps (``llama_vocab::impl::tokenize``): it first cuts
the text at every special token (longest first; ``tokenizer_st_partition``), then runs
the tokenizer proper on each raw fragment on its own (BPE: pre-tokenizer regex, then
merges; SPM: merges, with a space prefix after a special token when the vocabulary asks
for one -- and every raw fragment follows a special token or the start). So the tokens of
``A + <special> + B`` are ``tokens(A) + [special] + tokens(B)``, provided llama.cpp
really cuts at that occurrence of ``<special>``. It does for a *marker*: a control token
that no other special token contains or overlaps and that strips no whitespace around it
(``lstrip``/``rstrip``). Chat templates are made of such tokens (``<|im_start|>``,
``<start_of_turn>``), so a rendered chat splits into one piece per message, and a long
conversation re-sent with one more turn costs one new piece of tokenization.

A long raw piece (a document pasted into one message) is cut further, into chunks of
about ``chunk_chars``, before a space that follows an ASCII letter or digit and precedes
an ASCII letter: ``...word| word...``. Both tokenizers cut there on their own. BPE
pre-tokenizers (GPT-2 family: `` ?\p{L}+``, ``\p{N}``, ...) always end a word before such
a space and start the next at it, and merges never cross pre-tokens. SPM merges any
neighbours, but a merge only ever produces a vocabulary token, so it cannot cross the cut
if no token contains a letter or digit followed by the space symbol -- checked on the
vocabulary at load (and SPM's space prefix must be off). Chunks let a long new message
stop being tokenized after its first chunk when nothing can match past it.

``tests/prefix/test_segments.py`` checks the equality on both shipped models (BPE and
SPM); a vocabulary of another type, one that appends EOS, or one whose self-check at load
fails, is tokenized whole (still cached per prompt).
"""

from __future__ import annotations

import logging
import re
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from corral.prefix.chain import Continuation
from corral.prefix.hashing import token_bytes
from corral.prefix.memo import TextMemo
from corral.prefix.vocab import GgufVocab, SpecialToken

logger = logging.getLogger(__name__)

LSTRIP_RSTRIP = (1 << 7) | (1 << 8)  # LLAMA_TOKEN_ATTR_LSTRIP | LLAMA_TOKEN_ATTR_RSTRIP
_CONTROL = 1 << 3
_UNUSED = 1 << 1
#: Bytes a cached piece costs beyond its text and tokens (dict slot, objects' headers).
_PIECE_OVERHEAD_BYTES = 200
#: Bytes a cached continuation costs beyond its hashes.
_CONTINUATION_OVERHEAD_BYTES = 250
#: Continuations kept per piece (a piece is usually entered from one chain state).
_CONTINUATIONS_PER_PIECE = 4
#: Where a long raw piece may be cut: a space between an ASCII letter or digit and a letter.
_CUT = re.compile(r"(?<=[A-Za-z0-9]) (?=[A-Za-z])")
#: The first chunk of long raw text is about this long (text under twice this is not cut);
#: each next chunk is four times as long, up to MAX_CHUNK_CHARS.
CHUNK_CHARS = 64
MAX_CHUNK_CHARS = 4096
#: A piece is not cut before a marker until it has this many characters.
MIN_PIECE_CHARS = 32
#: How many characters of long texts have their cuts remembered (the chunks share the
#: texts' memory while the cache holds them).
_REMEMBERED_CUT_CHARS = 4 * 1024 * 1024


def choose_markers(specials: Sequence[SpecialToken]) -> dict[str, int]:
    """Special tokens at which llama.cpp always cuts the text: text -> token id."""
    texts = [special.text for special in specials if special.text]
    joined = "\0" + "\0".join(texts) + "\0"
    prefixes: set[str] = set()
    suffixes: set[str] = set()
    for text in texts:
        for cut in range(1, len(text)):
            prefixes.add(text[:cut])
            suffixes.add(text[cut:])
    markers: dict[str, int] = {}
    for special in specials:
        text = special.text
        if not text or special.attr & LSTRIP_RSTRIP or not special.attr & _CONTROL:
            continue
        if special.attr & _UNUSED:
            continue  # thousands of <unusedN> placeholders: never in a prompt, slow to match
        if joined.count(text) != 1:
            continue  # inside another special token (or a duplicate)
        cuts = range(1, len(text))
        if any(text[:cut] in suffixes or text[cut:] in prefixes for cut in cuts):
            continue  # overlaps another special token (or itself)
        markers[text] = special.id
    return markers


@dataclass(frozen=True, slots=True)
class Plan:
    """How to tokenize one prompt: ``prefix`` tokens, then each piece tokenized alone."""

    prefix: tuple[int, ...]
    pieces: list[str]
    add_special: bool  # passed to llama.cpp for every piece (True only for a whole prompt)
    #: Planned part by part (:meth:`Segmenter.plan_parts`): each part of more than one
    #: piece, as index of its first piece -> (how many, its text). Its tokens are its
    #: pieces' together, so a cached part stands for all of them.
    parts: dict[int, tuple[int, str]] = field(default_factory=dict)


class Segmenter:
    """Cuts prompts at markers (``segmented``) and long pieces into chunks (``chunked``);
    each is False where it is not known to be exact for the vocabulary."""

    def __init__(
        self, vocab: GgufVocab, *, samples: Iterable[str] = (), chunk_chars: int = CHUNK_CHARS
    ) -> None:
        self._vocab = vocab
        self.chunk_chars = chunk_chars
        self._cut: TextMemo[str, tuple[str, ...]] = TextMemo(_REMEMBERED_CUT_CHARS, len)  # long texts, cut
        # recent parts' plans: tuples of strings, which the garbage collector stops tracking
        self._planned: TextMemo[str, tuple[tuple[str, ...], bool]] = TextMemo(_REMEMBERED_CUT_CHARS, len)
        self.markers = choose_markers(vocab.special_tokens()) if _splittable(vocab) else {}
        self.segmented = bool(self.markers)
        self.chunked = self.segmented and _cuttable(vocab)
        if self.markers:
            alternatives = sorted(self.markers, key=len, reverse=True)
            self._pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        if self.segmented and not self._agrees(samples):
            logger.warning(
                "tokenizing %s piece by piece does not match whole prompts; tokenizing whole",
                vocab.path.name,
            )
            self.segmented = self.chunked = False

    def plan(self, text: str, *, add_special: bool) -> Plan:
        """Pieces cut before markers, but only once a piece has ``MIN_PIECE_CHARS`` (so
        that a chat message and the markers around it make one piece, not four), and
        inside long raw text at safe spaces."""
        if not self.segmented:
            return Plan((), [text], add_special)
        return Plan(self._prefix(add_special), self._pieces(text, self._chunks), False)

    def plan_parts(self, parts: Sequence[str], *, add_special: bool) -> Plan | None:
        """:meth:`plan` of ``"".join(parts)``, made part by part from cached part plans (a
        chat prompt's parts: one per message). Equally exact where every part after the
        first starts with a marker, since llama.cpp cuts there anyway; None where one does
        not (or nothing is segmented): then plan the whole text."""
        if not self.segmented:
            return None
        pieces: list[str] = []
        multiple: dict[int, tuple[int, str]] = {}
        for number, part in enumerate(parts):
            if not part:
                continue
            planned, starts_with_marker = self._planned.get_or_make(part, self._plan_part)
            if number and not starts_with_marker:
                return None
            if len(planned) > 1:
                multiple[len(pieces)] = (len(planned), part)
            pieces += planned
        return Plan(self._prefix(add_special), pieces, False, multiple)

    def starts_with_marker(self, text: str) -> bool:
        """Whether llama.cpp cuts before ``text`` (where it follows other text)."""
        return bool(self._pattern.match(text))

    def _plan_part(self, part: str) -> tuple[tuple[str, ...], bool]:
        """The part's pieces (its long raw text cut unremembered: the plan is remembered),
        and whether it starts with a marker."""
        return tuple(self._pieces(part, self._cut_at_spaces)), self.starts_with_marker(part)

    def _prefix(self, add_special: bool) -> tuple[int, ...]:
        return (self._vocab.bos,) if add_special and self._vocab.add_bos else ()

    def _pieces(self, text: str, chunks: Callable[[str], Sequence[str]]) -> list[str]:
        pieces: list[str] = []
        current = ""
        limit = 2 * self.chunk_chars if self.chunked else len(text) + 1
        for part in self._pattern.split(text):
            if part in self.markers:
                if len(current) >= MIN_PIECE_CHARS:
                    pieces.append(current)
                    current = ""
                current += part
            elif len(part) > limit:
                first, *rest = chunks(part)
                current += first
                for chunk in rest:
                    pieces.append(current)
                    current = chunk
            else:
                current += part
        if current:
            pieces.append(current)
        return pieces

    def _chunks(self, raw: str) -> tuple[str, ...]:
        """Raw text cut at safe spaces into chunks that start at ``chunk_chars`` and grow fourfold
        (a new long message stops being tokenized early; a cached one is few pieces).
        The same messages come back with every turn of a conversation: remembered."""
        return self._cut.get_or_make(raw, lambda text: tuple(self._cut_at_spaces(text)))

    def _cut_at_spaces(self, raw: str) -> list[str]:
        chunks: list[str] = []
        start = 0
        size = self.chunk_chars
        while len(raw) - start > 2 * size:
            cut = _CUT.search(raw, start + size)
            if cut is None:
                break
            chunks.append(raw[start : cut.start()])
            start = cut.start()
            size = min(4 * size, MAX_CHUNK_CHARS)
        chunks.append(raw[start:])
        return chunks

    def tokenize(self, text: str, *, add_special: bool) -> array[int]:
        """The whole prompt's tokens, piece by piece (uncached; for checks and tests)."""
        plan = self.plan(text, add_special=add_special)
        tokens = array("i", plan.prefix)
        for piece in plan.pieces:
            tokens.extend(self._vocab.tokenize(piece, add_special=plan.add_special))
        return tokens

    def probes(self) -> list[str]:
        """Texts that exercise the cuts (markers, spaces, long raw text, non-ASCII)."""
        markers = list(self.markers)
        words = "Once upon a time, 42 cats said: no. Then x2 ran off; caféA dog " * 2
        long_piece = words * (1 + 3 * min(self.chunk_chars, 4096) // len(words))
        return [
            f"{markers[0]}system\nYou are brief.{markers[-1]}\n{markers[0]}user\n Hi  there!",
            f" leading space{markers[0]}\n\n  two\tspaces {markers[-1]}é😀 end",
            f"{markers[0]}user\n{long_piece}{markers[-1]}",
        ]

    def _agrees(self, samples: Iterable[str]) -> bool:
        for text in [*samples, *self.probes()]:
            for add_special in (True, False):
                whole = self._vocab.tokenize(text, add_special=add_special)
                if self.tokenize(text, add_special=add_special) != whole:
                    return False
        return True


def _splittable(vocab: GgufVocab) -> bool:
    """Only BPE and SPM are known to tokenize raw fragments independently (and no EOS)."""
    return (vocab.is_bpe or vocab.is_spm) and not vocab.add_eos


def _cuttable(vocab: GgufVocab) -> bool:
    """Whether pieces may be cut before ``letter-or-digit | space letter`` (see the module)."""
    if vocab.is_bpe:
        return True
    if vocab.add_space_prefix:
        return False
    spans = re.compile("[A-Za-z0-9]\u2581")  # SPM writes a space as U+2581
    return not any(spans.search(text) for text in vocab.token_texts())


class Piece:
    """A piece's tokens (packed as hashed, :func:`corral.prefix.hashing.token_bytes`: bytes
    are not tracked by the garbage collector, arrays are), and what it added to the hash
    chains it was seen in."""

    __slots__ = ("bytes", "continuations", "text", "tokens")

    def __init__(self, text: str, tokens: array[int] | bytes) -> None:
        self.text = text
        self.tokens = tokens if isinstance(tokens, bytes) else token_bytes(tokens)
        self.continuations: dict[tuple[int, bytes], Continuation] = {}
        self.bytes = len(text) * 4 + len(self.tokens) + _PIECE_OVERHEAD_BYTES

    @property
    def count(self) -> int:
        """How many tokens."""
        return len(self.tokens) // 4


class PieceCache:
    """Recently seen prompt pieces, LRU, bounded in bytes (text, tokens and continuations
    together). Event loop only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._pieces: OrderedDict[str, Piece] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pieces)

    def get(self, text: str) -> Piece | None:
        cached = self._pieces.get(text)
        if cached is None:
            self.misses += 1
            return None
        self.hits += 1
        self._pieces.move_to_end(text)
        return cached

    def put(self, text: str, tokens: array[int] | bytes) -> Piece:
        """The piece, cached (unless it is larger than the whole cache)."""
        cached = self._pieces.get(text)
        if cached is not None:
            return cached
        cached = Piece(text, tokens)
        if cached.bytes <= self.max_bytes:
            self._pieces[text] = cached
            self._resize(cached.bytes)
        return cached

    def remember(self, cached: Piece, state: tuple[int, bytes], step: Continuation) -> None:
        """What ``cached`` added to a chain that stood at ``state``."""
        held = cached.continuations
        if state in held:
            return
        delta = _continuation_cost(step)
        if len(held) >= _CONTINUATIONS_PER_PIECE:
            delta -= _continuation_cost(held.pop(next(iter(held))))
        held[state] = step
        cached.bytes += delta
        if self._pieces.get(cached.text) is cached:
            self._resize(delta)

    def _resize(self, delta: int) -> None:
        self.bytes += delta
        while self.bytes > self.max_bytes and self._pieces:
            _, old = self._pieces.popitem(last=False)
            self.bytes -= old.bytes


def _continuation_cost(step: Continuation) -> int:
    hashes, _, pending, _ = step
    return _CONTINUATION_OVERHEAD_BYTES + 36 * len(hashes) + len(pending)
