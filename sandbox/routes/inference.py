"""Models, chat and legacy completions, and moderations."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from sandbox.datasets import content_text, estimate_tokens, last_user_text
from sandbox.ids import new_id
from sandbox.judge import embed, judge, judge_schema
from sandbox.models import GENERIC_ANSWER, best_answer, moderate
from sandbox.routes.common import read_json, runtime
from sandbox.state import MODERATION_MODELS
from sandbox.validation import invalid_type, invalid_value, is_int, require_object, require_str

router = APIRouter()

_FINGERPRINT = "fp_sandbox"


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": runtime(request).store.list_models()}


@router.get("/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> dict[str, Any]:
    return runtime(request).store.get_model(model)


@router.delete("/models/{model:path}")
async def delete_model(request: Request, model: str) -> dict[str, Any]:
    return runtime(request).store.delete_model(model)


def _answer(request: Request, model: str, prompt: str) -> str:
    examples = runtime(request).store.inference_examples(model)
    return GENERIC_ANSWER if examples is None else best_answer(examples, prompt)


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if not is_int(value) or value < 1:
                raise invalid_value(name, "expected a positive integer.")
            return int(value)
    return None


def _truncate(text: str, max_tokens: int | None) -> tuple[str, str]:
    # Mirrors estimate_tokens (4 characters per token) so usage stays consistent.
    if max_tokens is None or estimate_tokens(text) <= max_tokens:
        return text, "stop"
    return text[: max(0, (max_tokens - 1) * 4)], "length"


def _choices_count(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if not is_int(n) or not 1 <= n <= 128:
        raise invalid_value("n", "expected an integer between 1 and 128.")
    return int(n)


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise invalid_type("stream_options", "an object", options)
    return stream, bool(options.get("include_usage"))


def _words(text: str) -> Iterator[str]:
    # Stream word by word, keeping the separators so the pieces join back exactly.
    piece = ""
    for char in text:
        piece += char
        if char == " ":
            yield piece
            piece = ""
    if piece:
        yield piece


def _sse(chunks: Iterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _check_messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise invalid_value("messages", "a non-empty array of messages is required.")
    if not isinstance(value, list) or not value:
        raise invalid_type("messages", "a non-empty array", value)
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid_value(f"messages[{index}]", "each message needs a 'role'.")
    return value


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request) -> dict[str, Any] | StreamingResponse:
    body = require_object(await read_json(request))
    model = require_str(body, "model")
    messages = _check_messages(body.get("messages"))
    stream, include_usage = _stream_flags(body)
    n = _choices_count(body)
    schema = judge_schema(body)
    if schema is not None:
        # A grader asking for a label or a score: the deterministic judge answers.
        system = " ".join(content_text(m.get("content")) for m in messages if m["role"] == "system")
        answer = judge(schema, last_user_text(messages), system)
    else:
        answer = _answer(request, model, last_user_text(messages))
    text, finish_reason = _truncate(answer, _max_tokens(body))
    prompt_tokens = sum(estimate_tokens(content_text(m.get("content"))) for m in messages)
    completion_tokens = estimate_tokens(text) * n
    completion_id, created = new_id("chatcmpl-"), int(time.time())
    base = {"id": completion_id, "created": created, "model": model}
    if not stream:
        return {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": index,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
                for index in range(n)
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
            "system_fingerprint": _FINGERPRINT,
            "service_tier": "default",
        }

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        usage = {"usage": None} if include_usage else {}
        return {
            **base,
            "object": "chat.completion.chunk",
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
            **usage,
            **extra,
        }

    def delta(index: int, content: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": content, "logprobs": None, "finish_reason": finish}

    def chunks() -> Iterator[dict[str, Any]]:
        for index in range(n):
            yield chunk([delta(index, {"role": "assistant", "content": "", "refusal": None})])
            for word in _words(text):
                yield chunk([delta(index, {"content": word})])
            yield chunk([delta(index, {}, finish_reason)])
        if include_usage:
            yield chunk([], usage=_usage(prompt_tokens, completion_tokens))

    return _sse(chunks())


def _prompts(value: Any) -> list[str]:
    if value is None:
        raise invalid_value("prompt", "a prompt is required.")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return list(value)
    raise invalid_type("prompt", "a string or an array of strings", value)


@router.post("/completions", response_model=None)
async def completions(request: Request) -> dict[str, Any] | StreamingResponse:
    body = require_object(await read_json(request))
    model = require_str(body, "model")
    prompts = _prompts(body.get("prompt"))
    stream, include_usage = _stream_flags(body)
    max_tokens = _max_tokens(body)
    answers = [_truncate(_answer(request, model, prompt), max_tokens) for prompt in prompts]
    completion_id, created = new_id("cmpl-"), int(time.time())
    base = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
    usage = _usage(
        sum(estimate_tokens(p) for p in prompts), sum(estimate_tokens(t) for t, _ in answers)
    )
    if not stream:
        return {
            **base,
            "choices": [
                {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
                for index, (text, finish) in enumerate(answers)
            ],
            "usage": usage,
            "system_fingerprint": _FINGERPRINT,
        }

    def chunks() -> Iterator[dict[str, Any]]:
        for index, (text, finish) in enumerate(answers):
            for word in _words(text):
                yield {
                    **base,
                    "choices": [
                        {"text": word, "index": index, "logprobs": None, "finish_reason": None}
                    ],
                }
            yield {
                **base,
                "choices": [
                    {"text": "", "index": index, "logprobs": None, "finish_reason": finish}
                ],
            }
        if include_usage:
            yield {**base, "choices": [], "usage": usage}

    return _sse(chunks())


def _moderation_inputs(value: Any) -> list[tuple[str, bool]]:
    """(text, has_image) per input: a string, strings, or one multimodal parts array."""
    if isinstance(value, str):
        return [(value, False)]
    if isinstance(value, list) and all(isinstance(item, str) for item in value) and value:
        return [(item, False) for item in value]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        for index, part in enumerate(value):
            if part.get("type") not in ("text", "image_url"):
                raise invalid_value(f"input[{index}].type", "expected 'text' or 'image_url'.")
        text = " ".join(p.get("text", "") for p in value if p.get("type") == "text")
        has_image = any(p.get("type") == "image_url" for p in value)
        return [(text, has_image)]
    if value is None:
        raise invalid_value("input", "an input is required.")
    raise invalid_type("input", "a string, an array of strings or an array of parts", value)


@router.post("/moderations")
async def moderations(request: Request) -> dict[str, Any]:
    body = require_object(await read_json(request))
    model = body.get("model") or "omni-moderation-latest"
    if model not in MODERATION_MODELS:
        raise invalid_value("model", f"'{model}' is not a moderation model.")
    inputs = _moderation_inputs(body.get("input"))
    results = [moderate(text, has_image=image) for text, image in inputs]
    missing = runtime(request).config.moderation_missing_results
    return {
        "id": new_id("modr-"),
        "model": model,
        "results": results[: max(0, len(results) - missing)],
    }


@router.post("/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    body = require_object(await read_json(request))
    model = require_str(body, "model")
    value = body.get("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise invalid_type("input", "a string or an array of strings", value)
    tokens = sum(estimate_tokens(text) for text in inputs)
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": index, "embedding": embed(text)}
            for index, text in enumerate(inputs)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
