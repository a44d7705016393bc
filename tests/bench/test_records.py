"""Raw reads -> per-request results: chunk timestamps, usage, and every way a stream can fail."""

from __future__ import annotations

import orjson
import pytest

from corral.bench.records import Exchange, parse_exchange
from corral.bench.stats import tpot_s


def event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chat(content: str | None, finish: str | None = None, **extra: object) -> bytes:
    delta = {} if content is None else {"content": content}
    return event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})


def usage(completion: int, prompt: int = 7) -> bytes:
    return event({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})


DONE = b"data: [DONE]\n\n"


def exchange(reads: list[tuple[float, bytes]], status: int = 200, prompt_len: int | None = 12, **kw: object) -> Exchange:
    ex = Exchange(conversation=0, round=0, scheduled_s=0.0, output_len=16, prompt_len=prompt_len, **kw)  # type: ignore[arg-type]
    ex.start_s, ex.status, ex.reads, ex.end_s = 1.0, status, reads, 9.0
    return ex


def test_chunks_usage_and_text():
    reads = [
        (1.10, event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})),
        (1.15, chat("Hel")),
        (1.20, chat("lo", "stop")),
        (1.21, usage(2) + DONE),
    ]
    r = parse_exchange(exchange(reads))
    assert r.success and r.error is None
    # the role-only first delta is the first chunk (vLLM: non-empty choices), text or not
    assert r.chunk_times_s == (1.10, 1.15, 1.20)
    assert r.ttft_s == pytest.approx(0.10)
    assert r.latency_s == pytest.approx(0.20)  # the usage chunk does not move E2EL
    assert (r.text, r.output_tokens, r.output_tokens_source) == ("Hello", 2, "usage")
    assert r.prompt_tokens == 12  # the workload's count wins (vLLM) ...
    assert r.usage_prompt_tokens == 7  # ... the server's is kept alongside


def test_completions_text_and_events_sharing_a_read():
    reads = [(2.0, event({"choices": [{"text": "a"}]}) + event({"choices": [{"text": "b"}]})), (2.5, DONE)]
    r = parse_exchange(exchange(reads))
    assert r.chunk_times_s == (2.0, 2.0)  # one read, one timestamp
    assert r.itl_s == [0.0]
    assert r.text == "ab"


def test_an_event_split_across_reads_takes_the_time_of_the_last_piece():
    whole = chat("x")
    r = parse_exchange(exchange([(1.3, whole[:9]), (1.4, whole[9:]), (1.5, DONE)]))
    assert r.chunk_times_s == (1.4,)


def test_empty_chunks():
    reads = [
        (1.1, event({"choices": []})),  # no choices: not a chunk
        (1.2, b": keep-alive comment\n\n"),
        (1.3, chat("")),  # empty text: a chunk (timing), not a text chunk
        (1.4, chat("a")),
        (1.5, DONE),
    ]
    r = parse_exchange(exchange(reads))
    assert r.chunk_times_s == (1.3, 1.4)
    assert (r.output_tokens, r.output_tokens_source) == (1, "chunks")  # no usage: text chunks


def test_missing_usage_counts_text_chunks():
    r = parse_exchange(exchange([(1.1, chat("a")), (1.2, chat("b")), (1.3, chat("c") + DONE)], prompt_len=None))
    assert (r.output_tokens, r.output_tokens_source, r.prompt_tokens) == (3, "chunks", None)


def test_usage_on_a_chunk_with_choices_is_read():
    r = parse_exchange(exchange([(1.1, chat("a", "stop", usage={"completion_tokens": 1, "prompt_tokens": 3}))]))
    assert (r.output_tokens, r.output_tokens_source) == (1, "usage")


def test_one_output_token():
    r = parse_exchange(exchange([(1.25, chat("a", "length")), (1.26, usage(1) + DONE)]))
    assert r.success and r.itl_s == [] and tpot_s(r) is None
    assert r.ttft_s == pytest.approx(r.latency_s)


def test_http_error():
    body = orjson.dumps({"error": {"message": "no healthy endpoint", "type": "overloaded_error"}})
    r = parse_exchange(exchange([(1.01, body)], status=503))
    assert not r.success
    assert (r.error, r.error_detail) == ("http_503", "no healthy endpoint")


def test_error_frame_mid_stream():
    frame = event({"error": {"message": "worker died", "type": "server_error", "code": 502}})
    r = parse_exchange(exchange([(1.1, chat("a")), (1.2, frame)]))
    assert not r.success
    assert (r.error, r.error_detail) == ("stream_error", "worker died")


def test_transport_error_keeps_its_kind():
    ex = exchange([(1.1, chat("a"))], error="disconnected", error_detail="Server disconnected")
    r = parse_exchange(ex)
    assert not r.success and r.error == "disconnected"
    assert r.chunk_times_s == (1.1,)  # kept for --save-detailed, ignored by metrics


def test_no_chunk_at_all():
    r = parse_exchange(exchange([(1.1, usage(0) + DONE)]))
    assert (r.success, r.error) == (False, "no_content")


def test_bad_json():
    r = parse_exchange(exchange([(1.1, b"data: {not json\n\n")]))
    assert (r.success, r.error) == (False, "bad_json")


def test_time_to_second_token_skips_the_role_chunk():
    """A chat server sends its role chunk with the first token: TTST is token to token."""
    reads = [
        (1.10, event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})),
        (1.10, chat("Hel")),
        (1.16, chat("lo")),
        (1.20, chat(None, "stop") + usage(2) + DONE),
    ]
    r = parse_exchange(exchange(reads))
    assert r.ttft_s == pytest.approx(0.10)
    assert r.text_times_s == (1.10, 1.16)
    assert r.ttst_s == pytest.approx(0.06)
