"""Chat prompts rendered message by message, when the model's template allows it.

Rendering a chat template (sandboxed Jinja) costs tens of microseconds per request, and the
router renders every chat prompt it checks or hashes exactly. Most templates render each
message on its own, between a fixed header and the generation prompt (ChatML, Llama 3,
SmolLM2, Qwen...). For those, a conversation's text is:

    first(m1) + next(role1, m2) + next(role2, m3) + ... + generation prompt

where ``first(m)`` is ``[m]`` rendered alone (it carries any default system prompt), and
``next(r, m)`` is what ``m`` adds after a message of role ``r``. Each piece is rendered
once and kept (LRU, bounded in bytes): a conversation re-sent with one more turn renders
only that turn.

Whether a template is such a one is *checked*, not assumed: at construction the pieces
must reproduce the template's own output, to the character, for a set of sample
conversations (role orders, empty, spaced, multi-line, non-ASCII, quoted and reasoning
``<think>`` contents, long conversations). A template that merges the system prompt into
the first user turn (Gemma), numbers its messages, strips earlier turns' reasoning,
refuses some orders, or reads the clock (``strftime_now``) fails the check, and is then
rendered whole, as before; so is any conversation that does not end with a user turn. The worker
always renders whole; the router's text must equal it, which the check guarantees for
every template that passes, since Jinja templates that pass are pure functions of each
message and its predecessor's role.

A new message (every request has one) still costs a Jinja rendering, unless the template
writes each message's content out *as it is*: then a message's piece is a fixed head, the
content, and a fixed tail, per pair of roles, found once with a placeholder content. That
is established from the template's syntax tree (:func:`writes_content_verbatim`: messages
are read only for their role, and their content only inside output, joined by ``+`` or
``~``: no filter, test, condition, call or alias sees it) and confirmed on the sample
contents; any other template renders every new message.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from jinja2 import nodes

from corral.errors import InvalidRequestError
from corral.worker.chat_template import ChatTemplate

_ROLES = ("system", "user", "assistant")
_CONTENTS = (
    "", "Hello there.", "  spaced  ", "two\nlines\n\n", "é😀 ünïcode", "a" * 300,
    "<think>step one</think>The answer.", 'quotes " and \\ backslash', "{{ not jinja }} {% raw %}",
)
_SAMPLES: tuple[tuple[str, ...], ...] = (
    ("user",),
    ("system", "user"),
    ("user", "assistant", "user"),
    ("system", "user", "assistant", "user", "assistant", "user"),
    ("user", "user"),
    ("assistant", "user"),
    ("system", "system", "user"),
    ("user", "assistant", "assistant", "user"),
    ("user", "assistant", "user", "assistant", "user", "assistant", "user", "assistant", "user"),
)
#: Template text that makes a rendering depend on more than the messages (today's date).
_IMPURE = ("strftime_now", "now(")
_ANCHOR = "anchor message"
#: Content that stands for any content when finding a message's fixed head and tail.
_PLACEHOLDER = "\ue000corral placeholder\ue001"


class MessageRenderer:
    """``render(messages)`` equal to ``template.render(messages)`` (add_generation_prompt),
    message by message from a cache where :attr:`separable`, whole otherwise."""

    def __init__(self, template: ChatTemplate, *, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._template = template
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pieces: OrderedDict[tuple[str | None, str, str], str] = OrderedDict()
        self._prefixes: dict[str, str] = {}  # role -> its anchor rendered without generation prompt
        self._generation = ""
        # (previous role, role) -> the fixed text around a message's content, where verbatim
        self._shapes: dict[tuple[str | None, str], tuple[str, str]] = {}
        self.separable = self._check()
        if self.separable and writes_content_verbatim(template.parse()):
            self._shapes = self._find_shapes()
        self._pieces.clear()
        self._bytes = 0

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        parts = self.parts(messages)
        return self._template.render(messages) if parts is None else "".join(parts)

    def parts(self, messages: Sequence[Mapping[str, str]]) -> list[str] | None:
        """The rendering as its cached parts -- one per message, then the generation prompt
        -- whose concatenation is the template's text; None where it must be rendered whole.
        The same message in the same place yields the same string object each time (cheap
        to look up again: Python keeps a string's hash)."""
        # Only a conversation that ends with a user turn is what the check covered: a template
        # may treat a final assistant turn (a prefill to continue) differently.
        if not self.separable or not messages or messages[-1]["role"] != "user":
            return None
        parts: list[str] = []
        previous: str | None = None
        try:
            for message in messages:
                role, content = message["role"], message["content"]
                if role not in self._prefixes:  # a role the check did not cover: render whole
                    return None
                parts.append(self._piece(previous, role, content))
                previous = role
        except (_NotSeparable, InvalidRequestError):
            return None  # whole: the template's own answer, or its error
        parts.append(self._generation)
        return parts

    # -- pieces ----------------------------------------------------------------------

    def _piece(self, previous: str | None, role: str, content: str) -> str:
        key = (previous, role, content)
        piece = self._pieces.get(key)
        if piece is not None:
            self._pieces.move_to_end(key)
            return piece
        shape = self._shapes.get((previous, role))
        if shape is not None:
            piece = shape[0] + content + shape[1]
        else:
            piece = self._render_piece(previous, role, content)
        self._keep(key, piece)
        return piece

    def _render_piece(self, previous: str | None, role: str, content: str) -> str:
        message = {"role": role, "content": content}
        if previous is None:
            piece = self._template.render([message], add_generation_prompt=False)
        else:
            anchor = self._prefixes[previous]
            whole = self._template.render(
                [{"role": previous, "content": _ANCHOR}, message], add_generation_prompt=False
            )
            if not whole.startswith(anchor):
                raise _NotSeparable
            piece = whole[len(anchor) :]
        return piece

    def _find_shapes(self) -> dict[tuple[str | None, str], tuple[str, str]]:
        """Per (previous role, role), the head and tail around a message's content, if the
        placeholder shows where the content goes and every sample content agrees."""
        shapes: dict[tuple[str | None, str], tuple[str, str]] = {}
        try:
            for previous in (None, *_ROLES):
                for role in _ROLES:
                    sample = self._render_piece(previous, role, _PLACEHOLDER)
                    if sample.count(_PLACEHOLDER) != 1:
                        return {}
                    head, tail = sample.split(_PLACEHOLDER)
                    for content in _CONTENTS:
                        if self._render_piece(previous, role, content) != head + content + tail:
                            return {}
                    shapes[(previous, role)] = (head, tail)
        except (InvalidRequestError, _NotSeparable):
            return {}
        return shapes

    def _keep(self, key: tuple[str | None, str, str], piece: str) -> None:
        size = _size(key[2], piece)
        if size > self._max_bytes:
            return
        self._pieces[key] = piece
        self._bytes += size
        while self._bytes > self._max_bytes:
            (_, _, content), old = self._pieces.popitem(last=False)
            self._bytes -= _size(content, old)

    # -- the check ---------------------------------------------------------------------

    def _check(self) -> bool:
        render = self._template.render
        if any(word in self._template.source for word in _IMPURE):
            return False  # e.g. "Today Date: ...": a cached piece would go stale
        try:
            for role in _ROLES:
                anchor = [{"role": role, "content": _ANCHOR}]
                self._prefixes[role] = render(anchor, add_generation_prompt=False)
            anchor_text = self._prefixes["user"]
            with_prompt = render([{"role": "user", "content": _ANCHOR}], add_generation_prompt=True)
            if not with_prompt.startswith(anchor_text):
                return self._fail()
            self._generation = with_prompt[len(anchor_text) :]
            for number, roles in enumerate(_SAMPLES):
                messages = [
                    {"role": role, "content": _CONTENTS[(number + index) % len(_CONTENTS)]}
                    for index, role in enumerate(roles)
                ]
                if self.render_pieces(messages) != render(messages):
                    return self._fail()
        except (InvalidRequestError, _NotSeparable):
            return self._fail()
        return True

    def render_pieces(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The message-by-message rendering, cached or not (for the check and tests)."""
        parts = []
        previous: str | None = None
        for message in messages:
            parts.append(self._piece(previous, message["role"], message["content"]))
            previous = message["role"]
        return "".join(parts) + self._generation

    def _fail(self) -> bool:
        self._prefixes.clear()
        return False


def writes_content_verbatim(tree: nodes.Template) -> bool:
    """Whether a chat template reads ``messages`` only to loop over them (whole or sliced),
    take their ``length`` or index them, reads a message only for its ``role`` and
    ``content``, and uses a content only by writing it out, joined to other text with ``+``
    or ``~``: then the content cannot change anything else, nor be changed."""
    lists = {"messages"}
    singles = {
        loop.target.name
        for loop in tree.find_all(nodes.For)
        if isinstance(loop.target, nodes.Name) and _is_message_list(loop.iter, lists)
    }
    ancestors: list[nodes.Node] = []

    def visit(node: nodes.Node) -> bool:
        if isinstance(node, nodes.Name) and node.ctx == "load":
            if node.name in lists and not _list_use(node, ancestors, lists):
                return False
            if node.name in singles and not _message_use(node, ancestors, len(ancestors) - 1):
                return False
        ancestors.append(node)
        try:
            return all(visit(child) for child in node.iter_child_nodes())
        finally:
            ancestors.pop()

    return visit(tree)


#: Statements whose body is written out as it is.
_PLAIN_BLOCKS = (nodes.Template, nodes.For, nodes.If)


def _is_message_list(expr: nodes.Node, lists: set[str]) -> bool:
    if isinstance(expr, nodes.Name):
        return expr.name in lists
    return isinstance(expr, nodes.Getitem) and isinstance(expr.arg, nodes.Slice) and _is_message_list(expr.node, lists)


def _list_use(expr: nodes.Node, ancestors: list[nodes.Node], lists: set[str]) -> bool:
    """``messages`` (or a slice of it) used harmlessly: looped over, measured, or indexed
    for a message that is itself used harmlessly."""
    for level in range(len(ancestors) - 1, -1, -1):
        parent = ancestors[level]
        if isinstance(parent, nodes.For) and parent.iter is expr:
            return True
        if isinstance(parent, nodes.Filter) and parent.node is expr and parent.name == "length":
            return True
        if not (isinstance(parent, nodes.Getitem) and parent.node is expr):
            return False
        if isinstance(parent.arg, nodes.Const) and type(parent.arg.value) is int:
            return _message_use(parent, ancestors, level - 1)
        if not isinstance(parent.arg, nodes.Slice):
            return False
        expr = parent
    return False


def _message_use(expr: nodes.Node, ancestors: list[nodes.Node], level: int) -> bool:
    """A message read for its role, or for its content written out as it is."""
    if level < 0:
        return False
    parent = ancestors[level]
    if isinstance(parent, nodes.Getitem) and parent.node is expr and isinstance(parent.arg, nodes.Const):
        key = parent.arg.value
    elif isinstance(parent, nodes.Getattr) and parent.node is expr:
        key = parent.attr
    else:
        return False
    if key == "role":
        return True
    if key != "content":
        return False
    for depth in range(level - 1, -1, -1):
        outer = ancestors[depth]
        if isinstance(outer, nodes.Output):
            # written straight into the template's text: not captured by a block
            # ({% set %}...{% endset %}, {% filter %}, {% call %}, a macro) that could change it
            return all(isinstance(node, _PLAIN_BLOCKS) for node in ancestors[:depth])
        if not isinstance(outer, nodes.Add | nodes.Concat):
            return False
    return False


def _size(content: str, piece: str) -> int:
    """What an entry costs, at most: both strings at 4 bytes a character, and the entry."""
    return 4 * (len(content) + len(piece)) + 200


class _NotSeparable(Exception):
    """The template's text for [previous, message] does not start with its text for [previous]."""
