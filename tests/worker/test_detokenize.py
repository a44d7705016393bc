from corral.worker.detokenize import IncrementalDetokenizer

PIECES = {
    1: "é".encode()[:1],
    2: "é".encode()[1:],
    3: b" ok",
    4: "🙂".encode()[:2],
    5: "🙂".encode()[2:],
    6: b"\xff",
}


def detokenizer() -> IncrementalDetokenizer:
    return IncrementalDetokenizer(PIECES.__getitem__)


def test_a_character_split_across_tokens_is_emitted_whole() -> None:
    d = detokenizer()
    assert d.push(1) == ""
    assert d.push(2) == "é"
    assert d.push(3) == " ok"


def test_four_byte_character() -> None:
    d = detokenizer()
    assert [d.push(4), d.push(5)] == ["", "🙂"]


def test_an_unfinished_character_at_the_end_becomes_a_replacement() -> None:
    d = detokenizer()
    assert d.push(3) == " ok"
    assert d.push(4) == ""
    assert d.flush() == "\ufffd"


def test_invalid_bytes_become_replacements() -> None:
    assert detokenizer().push(6) == "\ufffd"


def test_joined_output_equals_decoding_all_bytes() -> None:
    d = detokenizer()
    tokens = [3, 1, 2, 4, 5, 3]
    text = "".join(d.push(t) for t in tokens) + d.flush()
    assert text == b"".join(PIECES[t] for t in tokens).decode()
