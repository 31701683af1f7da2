"""The served /openapi.json: typed 2xx bodies, OpenAI's error object, raw request bodies.

The rule: every ``/v1`` operation documents its success body (the route's
``response_model``) and the errors every route can answer, each as OpenAI's error object
``{"error": {"message", "type", "param", "code"}}`` (``ErrorResponse``); a route adds its
own (402, 502…) with ``responses=errors(...)``. FastAPI's 422 ``HTTPValidationError`` is
removed: ftq answers validation failures with 400 in OpenAI's shape (``api/errors.py``).
Routes that read their body themselves (the streamed multipart upload, the inference
pass-through) get their request schema declared here, since FastAPI cannot infer it. The
``webhooks`` section lists every event type of the catalogue with the body ftq POSTs.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from service.files.wire import FileObject, FileUploadForm
from service.jobs.wire import (
    ChatCompletionRequest,
    CompletionRequest,
    FineTuningJobCheckpointObject,
    FineTuningJobObject,
)
from service.registry.wire import ModelNoticeObject
from service.webhooks.events import EventType
from service.webhooks.wire import WebhookEndpointObject, WebhookEvent


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error ftq answers, in OpenAI's shape."""

    error: ErrorObject


_MEANING = {
    400: "Invalid request: a parameter, body or state the operation does not accept.",
    401: "Missing, malformed, unknown or revoked API key.",
    402: "The team's monthly budget cannot cover this job's estimated cost.",
    403: "The key's role may not call this operation.",
    404: "No such object (another team's objects answer exactly like missing ones).",
    409: "Conflict: an Idempotency-Key reused with another body, or the object's state.",
    413: "The body or file is too large, or the team's storage quota is full.",
    415: "The body is not JSON (uploads aside, every /v1 body is application/json).",
    429: "Rate limit or quota exceeded; see Retry-After.",
    502: "The provider failed to answer this call.",
    503: "A dependency is unavailable; nothing was changed. Retry after Retry-After.",
}
# Every /v1 operation can answer these (auth, roles, rate limits, a busy database).
_ALWAYS = (400, 401, 403, 404, 429, 503)
# Every write may meet an Idempotency-Key or state conflict, an oversized or non-JSON body.
_WRITES = {
    "post": (409, 413, 415),
    "put": (409, 413, 415),
    "patch": (409, 413, 415),
    "delete": (409, 413, 415),
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}

# Operations whose bodies are read by the route itself: (method, path) -> (type, model).
_RAW_BODIES: dict[tuple[str, str], tuple[str, type[BaseModel]]] = {
    ("post", "/v1/files"): ("multipart/form-data", FileUploadForm),
    ("post", "/v1/chat/completions"): ("application/json", ChatCompletionRequest),
    ("post", "/v1/completions"): ("application/json", CompletionRequest),
}


# The object a webhook event's ``data`` holds, by event type prefix (most specific first);
# a new catalogue type is documented without touching this file.
_EVENT_DATA: tuple[tuple[str, type[BaseModel]], ...] = (
    ("fine_tuning.job.checkpoint.", FineTuningJobCheckpointObject),
    ("fine_tuning.job.", FineTuningJobObject),
    ("file.", FileObject),
    ("webhook_endpoint.", WebhookEndpointObject),
    ("webhook.", WebhookEndpointObject),
    ("model.", ModelNoticeObject),
)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own error statuses, each as OpenAI's error object."""
    return {s: {"model": ErrorResponse, "description": _MEANING[s]} for s in statuses}


def _add_component(components: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(model.__name__, schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _document(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _add_component(components, ErrorResponse)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if not path.startswith("/v1/"):
                continue
            for status in (*_ALWAYS, *_WRITES.get(method, ())):
                responses.setdefault(
                    str(status),
                    {
                        "description": _MEANING[status],
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    },
                )
            raw = _RAW_BODIES.get((method, path))
            if raw is not None:
                media_type, model = raw
                operation["requestBody"] = {
                    "required": True,
                    "content": {media_type: {"schema": _add_component(components, model)}},
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _document_webhooks(schema, components)


def _document_webhooks(schema: dict[str, Any], components: dict[str, Any]) -> None:
    envelope = _add_component(components, WebhookEvent)
    hooks = schema.setdefault("webhooks", {})
    for event_type in EventType:
        data = next((m for prefix, m in _EVENT_DATA if event_type.startswith(prefix)), None)
        body: dict[str, Any] = envelope
        if data is not None:
            body = {
                "allOf": [
                    envelope,
                    {
                        "properties": {
                            "type": {"const": event_type.value},
                            "data": _add_component(components, data),
                        }
                    },
                ]
            }
        hooks[event_type.value] = {
            "post": {
                "summary": f"{event_type.value}, signed per the Standard Webhooks spec",
                "requestBody": {"content": {"application/json": {"schema": body}}},
                "responses": {"200": {"description": "Any 2xx acknowledges the event."}},
            }
        }


def install_openapi(app: FastAPI) -> None:
    """Serve the documented schema at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _document(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
