"""A stream request the upstream answers with plain JSON still streams the answer; an
answer that is neither is a ProviderError (the API's 502), never an empty 200 stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from service.providers.base import ProviderError
from service.providers.openai_provider import OpenAICredentials, OpenAIInference
from service.providers.streaming import chat_chunks, text_completion_chunks

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1764460800,
    "model": "ft:gpt-4o-mini:team:x:ftjob-1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


class Upstream(BaseHTTPRequestHandler):
    answer: tuple[str, bytes] = ("application/json", json.dumps(COMPLETION).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        content_type, body = self.answer
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[tuple[HTTPServer, OpenAIInference]]:
    server = HTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    credentials = OpenAICredentials(
        base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="sk-test"
    )
    yield server, OpenAIInference(credentials, timeout=5, max_retries=0)
    server.shutdown()
    server.server_close()


BODY: dict[str, Any] = {
    "model": COMPLETION["model"],
    "messages": [{"role": "user", "content": "Capital of France?"}],
    "stream": True,
}


def test_a_json_answer_to_a_stream_request_is_streamed(
    upstream: tuple[HTTPServer, OpenAIInference], monkeypatch: pytest.MonkeyPatch
) -> None:
    _server, provider = upstream
    chunks = list(provider.chat_completion_stream(BODY))
    assert chunks, "an empty stream would reach the caller as an empty answer"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in chunks)
    text = "".join(choice["delta"].get("content") or "" for c in chunks for choice in c["choices"])
    assert text == "Paris."
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 11


def test_an_event_stream_still_passes_through(
    upstream: tuple[HTTPServer, OpenAIInference], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = b"".join(
        b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chat_chunks(COMPLETION)
    )
    monkeypatch.setattr(Upstream, "answer", ("text/event-stream", events + b"data: [DONE]\n\n"))
    _server, provider = upstream
    assert list(provider.chat_completion_stream(BODY)) == list(chat_chunks(COMPLETION))


@pytest.mark.parametrize(
    "answer",
    [
        ("text/html", b"<html>gateway timeout</html>"),
        ("application/json", b'{"object": "list", "data": []}'),
        ("text/event-stream", b"data: {not json\n\ndata: [DONE]\n\n"),
    ],
)
def test_an_answer_that_is_neither_is_a_provider_error(
    upstream: tuple[HTTPServer, OpenAIInference],
    monkeypatch: pytest.MonkeyPatch,
    answer: tuple[str, bytes],
) -> None:
    monkeypatch.setattr(Upstream, "answer", answer)
    _server, provider = upstream
    with pytest.raises(ProviderError, match="stream"):
        list(provider.chat_completion_stream(BODY))


def test_legacy_completions_convert_too() -> None:
    answer = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "ft:babbage-002:team::ftjob-2",
        "choices": [{"index": 0, "text": " 144.", "finish_reason": "stop", "logprobs": None}],
    }
    (chunk,) = text_completion_chunks(answer)
    assert chunk["choices"][0]["text"] == " 144." and chunk["object"] == "text_completion"


def test_together_streams_a_json_answer_too(
    upstream: tuple[HTTPServer, OpenAIInference],
) -> None:
    from service.providers.together_provider import TogetherCredentials, TogetherProvider

    server, _provider = upstream
    together = TogetherProvider(
        TogetherCredentials(
            api_key="tg-test", base_url=f"http://127.0.0.1:{server.server_port}/v1"
        ),
        timeout=5,
        max_retries=0,
    )
    chunks = list(together.chat_completion_stream(BODY))
    assert "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]) == (
        "Paris."
    )
