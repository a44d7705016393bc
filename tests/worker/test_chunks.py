from corral.worker.chunks import Head, chunk, completion, role_chunk, usage_chunk
from corral.worker.streams import Usage

USAGE = Usage(prompt_tokens=3, completion_tokens=2, cached_tokens=1)


def test_chat_stream_chunks_have_openai_shape() -> None:
    head = Head.new("m", "chat")
    assert head.id.startswith("chatcmpl-")
    first = role_chunk(head)
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
            "logprobs": None,
        }
    ]
    assert chunk(head, "hi")["choices"][0]["delta"] == {"content": "hi"}
    last = chunk(head, None, "stop")["choices"][0]
    assert last["delta"] == {} and last["finish_reason"] == "stop"
    assert first["id"] == chunk(head, "x")["id"] == head.id


def test_text_completion_chunks() -> None:
    head = Head.new("m", "text")
    assert head.id.startswith("cmpl-")
    piece = chunk(head, "abc")
    assert piece["object"] == "text_completion"
    assert piece["choices"][0]["text"] == "abc"
    assert chunk(head, None, "length")["choices"][0] == {
        "index": 0,
        "text": "",
        "finish_reason": "length",
        "logprobs": None,
    }


def test_usage_chunk_has_no_choices() -> None:
    body = usage_chunk(Head.new("m", "chat"), USAGE)
    assert body["choices"] == []
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 1},
    }


def test_whole_responses() -> None:
    chat = completion(Head.new("m", "chat"), "hi", "stop", USAGE)
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    text = completion(Head.new("m", "text"), "hi", "length", USAGE)
    assert text["object"] == "text_completion"
    assert text["choices"][0]["text"] == "hi" and text["choices"][0]["finish_reason"] == "length"
    assert text["usage"]["total_tokens"] == 5
