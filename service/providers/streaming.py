"""Streamed inference answers, whatever shape the upstream chose to send them in.

A caller that asked for ``stream: true`` gets server-sent chunks. Some OpenAI-compatible
servers (gateways, older vLLM builds, proxies that buffer) answer such a request with the
plain JSON completion instead; the SDK then finds no events and yields nothing, which used
to reach the caller as an empty 200 stream. Here the answer is read by its
``Content-Type``: an event stream is passed through chunk by chunk, a JSON completion is
turned into the chunks OpenAI would have streamed for it (role and content, then the
finish reason, then usage when the upstream reported it), and anything else is a
``ProviderError`` the API answers as 502 before a byte of the stream is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from service.providers.base import ErrorKind, ProviderError

_MESSAGE_FIELDS = ("role", "content", "refusal", "tool_calls", "function_call", "audio")


def chunks_from_raw(raw: Any, *, object_type: str) -> Iterator[dict[str, Any]]:
    """The chunks of an SDK ``with_raw_response`` answer to a stream request.

    ``object_type`` is what the JSON fallback must be: ``chat.completion`` or
    ``text_completion``.
    """
    content_type = str(raw.headers.get("content-type", "")).lower()
    if content_type.startswith("text/event-stream"):
        try:
            for chunk in raw.parse():
                yield chunk.model_dump(exclude_unset=True)
        except ValueError:  # the SDK's json.loads of an event
            raise ProviderError(
                "the provider sent a stream event that is not JSON", kind=ErrorKind.permanent
            ) from None
        return
    body = raw.http_response.read()
    try:
        answer = json.loads(body)
    except ValueError:
        raise ProviderError(
            f"the provider answered a stream request with {content_type or 'no content type'}"
            " that is neither an event stream nor JSON",
            kind=ErrorKind.permanent,
        ) from None
    if object_type == "chat.completion":
        yield from chat_chunks(answer)
    else:
        yield from text_completion_chunks(answer)


def _check(answer: Any, object_type: str) -> list[dict[str, Any]]:
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(choice, dict) for choice in choices)
    ):
        raise ProviderError(
            f"the provider answered a stream request with JSON that is not a {object_type}",
            kind=ErrorKind.permanent,
        )
    return choices


def _envelope(answer: dict[str, Any], object_type: str) -> dict[str, Any]:
    envelope = {"id": answer.get("id"), "object": object_type}
    for name in ("created", "model", "system_fingerprint", "service_tier"):
        if answer.get(name) is not None:
            envelope[name] = answer[name]
    return envelope


def chat_chunks(answer: Any) -> Iterator[dict[str, Any]]:
    """``chat.completion`` -> the ``chat.completion.chunk`` objects a stream would carry."""
    choices = _check(answer, "chat.completion")
    envelope = _envelope(answer, "chat.completion.chunk")
    for position, choice in enumerate(choices):
        index = choice.get("index", position)
        raw_message = choice.get("message")
        message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
        delta = {name: message[name] for name in _MESSAGE_FIELDS if message.get(name) is not None}
        if isinstance(delta.get("tool_calls"), list):
            # Streamed tool calls carry their position in the list.
            delta["tool_calls"] = [
                {"index": i, **call} if isinstance(call, dict) else call
                for i, call in enumerate(delta["tool_calls"])
            ]
        delta.setdefault("role", "assistant")
        first = {"index": index, "delta": delta, "finish_reason": None}
        if choice.get("logprobs") is not None:
            first["logprobs"] = choice["logprobs"]
        yield {**envelope, "choices": [first]}
        finish = choice.get("finish_reason") or "stop"
        yield {**envelope, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]}
    if isinstance(answer.get("usage"), dict):
        yield {**envelope, "choices": [], "usage": answer["usage"]}


def text_completion_chunks(answer: Any) -> Iterator[dict[str, Any]]:
    """A legacy ``text_completion`` -> its streamed form (one chunk per choice)."""
    choices = _check(answer, "text_completion")
    envelope = _envelope(answer, "text_completion")
    for position, choice in enumerate(choices):
        yield {
            **envelope,
            "choices": [
                {
                    "index": choice.get("index", position),
                    "text": choice.get("text") or "",
                    "logprobs": choice.get("logprobs"),
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            ],
        }
    if isinstance(answer.get("usage"), dict):
        yield {**envelope, "choices": [], "usage": answer["usage"]}
