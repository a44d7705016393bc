from corral.worker.stops import StopMatcher


def feed(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    out: list[str] = []
    for piece in pieces:
        text, stopped = matcher.push(piece)
        out.append(text)
        if stopped:
            return out, True
    out.append(matcher.flush())
    return out, False


def test_without_stops_text_passes_through() -> None:
    assert feed(StopMatcher([]), ["a", "b"]) == (["a", "b", ""], False)


def test_stop_inside_one_piece_cuts_before_it() -> None:
    assert feed(StopMatcher(["END"]), ["abc END def"]) == (["abc "], True)


def test_stop_split_across_pieces_is_held_back_then_dropped() -> None:
    out, stopped = feed(StopMatcher(["</s>"]), ["Hello <", "/", "s> more"])
    assert stopped
    assert "".join(out) == "Hello "
    assert out[0] == "Hello "  # "<" held back: it may begin the stop string


def test_held_text_is_released_when_the_stop_does_not_complete() -> None:
    out, stopped = feed(StopMatcher(["</s>"]), ["a <", "/", "b"])
    assert not stopped
    assert out == ["a ", "", "</b", ""]


def test_held_text_is_flushed_at_the_end() -> None:
    out, stopped = feed(StopMatcher(["\n\n"]), ["line\n"])
    assert not stopped
    assert out == ["line", "\n"]


def test_earliest_of_several_stops_wins() -> None:
    assert feed(StopMatcher(["world", "lo"]), ["hello world"]) == (["hel"], True)


def test_longest_partial_prefix_is_held() -> None:
    matcher = StopMatcher(["abcd", "xy"])
    assert matcher.push("zzabc") == ("zz", False)
    assert matcher.push("x") == ("abc", False)
    assert matcher.push("y") == ("", True)


def test_empty_stop_strings_are_ignored() -> None:
    assert feed(StopMatcher(["", "q"]), ["abc"]) == (["abc", ""], False)
