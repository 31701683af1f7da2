"""/v1/models and /v1/chat/completions: using the team's fine-tuned models."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Reader, Writer
from api.openapi import errors
from api.pagination import ListObject, page
from service.db import session_scope
from service.errors import InvalidRequest, UpstreamError
from service.jobs.inference import provider_for_model
from service.jobs.wire import ChatCompletionObject, CompletionObject
from service.providers.base import ProviderError
from service.providers.errors import api_error_from_provider
from service.registry import lineage as registry
from service.registry.retirement import refuse_if_retired
from service.registry.wire import RegisteredModelObject

log = structlog.get_logger(__name__)
router = APIRouter(tags=["models"])


def _date_param(value: str | None, param: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{param} must be a date like 2027-01-14; got {value[:40]!r}.",
            param=param,
            code="invalid_date",
        ) from None


# ftq's registry: filters (query extensions) and, per fine-tune, its lineage and shutdown.
@router.get("/v1/models", response_model=ListObject[RegisteredModelObject])
def list_models(
    principal: Reader,
    provider: str | None = None,
    base_model: str | None = None,
    shuts_down_before: str | None = None,
) -> dict[str, Any]:
    before = _date_param(shuts_down_before, "shuts_down_before")
    with session_scope() as session:
        return page(
            registry.list_entries(
                session,
                principal.team_id,
                provider=provider,
                base_model=base_model,
                shuts_down_before=before,
            ),
            False,
        )


@router.get("/v1/models/{model_id:path}", response_model=RegisteredModelObject)
def retrieve_model(model_id: str, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return registry.retrieve(session, principal.team_id, model_id)


async def _json_body(
    request: Request, *, input_field: str, input_type: type | tuple[type, ...]
) -> dict[str, Any]:
    """The body of an inference call: a JSON object naming a model and its input."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…]]]]
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(body.get(input_field), input_type) or not body[input_field]:
        raise InvalidRequest(f"Missing required parameter: '{input_field}'.", param=input_field)
    return body


async def _provider_for(principal: Any, model: str) -> Any:
    def resolve() -> Any:
        with session_scope() as session:
            refuse_if_retired(session, principal.team_id, model)
            return provider_for_model(session, principal.team_id, model)

    return await run_in_threadpool(resolve)


def _sse(chunks: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    except ProviderError as error:
        # Headers are gone already; tell the client in-band, as OpenAI does.
        yield b"data: " + json.dumps(api_error_from_provider(error).to_body()).encode() + b"\n\n"
    except Exception as error:  # a cut stream would read as a complete, shorter answer
        log.exception("inference_stream_failed", error=type(error).__name__)
        failed = UpstreamError("The stream failed before the answer was complete.")
        yield b"data: " + json.dumps(failed.to_body()).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


# The provider's answer passes through as it is (fields ftq does not know included), so the
# 200 body is documented rather than re-validated.
@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletionObject,
            "description": "The completion; with stream=true, server-sent chunk events.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **errors(502),
    },
)
async def chat_completions(
    request: Request, principal: Writer
) -> dict[str, Any] | StreamingResponse:
    body = await _json_body(request, input_field="messages", input_type=list)

    provider = await _provider_for(principal, body["model"])
    if body.get("stream"):
        try:
            chunks = provider.chat_completion_stream(body)
            first = await run_in_threadpool(next, chunks, None)
        except ProviderError as error:
            raise api_error_from_provider(error) from error
        if first is None:
            # Refused before the 200 goes out: an empty stream would read as an empty answer.
            raise UpstreamError(
                "The provider ended the stream without sending any part of the answer.",
                code="provider_empty_stream",
            )

        def replay() -> Iterator[dict[str, Any]]:
            if first is not None:
                yield first
            yield from chunks

        return StreamingResponse(_sse(replay()), media_type="text/event-stream")
    try:
        return await run_in_threadpool(provider.chat_completion, body)
    except ProviderError as error:
        raise api_error_from_provider(error) from error


@router.post(
    "/v1/completions",
    response_model=None,
    responses={200: {"model": CompletionObject, "description": "The completion."}, **errors(502)},
)
async def completions(request: Request, principal: Writer) -> dict[str, Any]:
    """Legacy completions, for fine-tunes of babbage-002 and davinci-002."""
    body = await _json_body(request, input_field="prompt", input_type=(str, list))
    if body.get("stream"):
        raise InvalidRequest("Streaming is not supported on /v1/completions.", param="stream")

    provider = await _provider_for(principal, body["model"])
    try:
        return await run_in_threadpool(provider.completion, body)
    except ProviderError as error:
        raise api_error_from_provider(error) from error
