"""Every request body is bounded before anything parses it, and every URL is plain text.

JSON routes get ``max_request_body_bytes`` and inference routes (chat and legacy
completions) ``max_inference_body_bytes``: a declared ``Content-Length`` over the limit is
refused with 413 before a byte is read, and an undeclared (chunked) body is counted as it
arrives and refused the moment it passes the limit. Bodies under the limit are held here
and handed on whole, so a refusal never reaches a half-read request. ``POST /v1/files``
keeps its own streamed limit (``api.uploads``), checked while the file goes to disk.

A non-empty body under /v1 (uploads aside) must be JSON: any other Content-Type, or none,
is a 415 that says so, instead of a body parsed as something else or silently ignored.

A path or query string carrying NUL or other control characters (``%00``) is refused with
400 here: no id, cursor or filter contains one, and Postgres refuses them in text.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.idempotency import send_json
from api.uploads import is_upload_route
from service.config import get_settings
from service.errors import FtqError, InvalidRequest, PayloadTooLarge

INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _limit_for(method: str, path: str) -> tuple[int | None, str]:
    """The byte limit of a route's body and the setting that sets it (None: unbounded here)."""
    settings = get_settings()
    if is_upload_route(method, path):
        return None, ""
    if path.rstrip("/") in INFERENCE_PATHS:
        return settings.max_inference_body_bytes, "FTQ_MAX_INFERENCE_BODY_BYTES"
    return settings.max_request_body_bytes, "FTQ_MAX_REQUEST_BODY_BYTES"


def _has_control_characters(raw: bytes) -> bool:
    return any(byte < 0x20 or byte == 0x7F for byte in raw)


def _too_large(limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than this route accepts ({limit} bytes; "
        f"operators set it with {setting}).",
        code="request_too_large",
    )


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name.lower() == b"content-type":
            return str(value.decode("latin-1"))
    return ""


def _is_json(scope: Scope) -> bool:
    media_type = _content_type(scope).split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class UnsupportedMediaType(FtqError):
    status_code = 415
    default_code = "unsupported_content_type"


def _not_json(scope: Scope) -> FtqError:
    sent = _content_type(scope)
    return UnsupportedMediaType(
        "The request body must be JSON sent with 'Content-Type: application/json'; this "
        f"request sent {f'Content-Type {sent[:100]!r}' if sent else 'no Content-Type'} "
        "(curl -d sends form encoding unless given -H 'Content-Type: application/json')."
    )


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        query = scope.get("query_string", b"")
        if _has_control_characters(unquote_to_bytes(raw_path)) or _has_control_characters(
            unquote_to_bytes(query.replace(b"+", b" "))
        ):
            error = InvalidRequest(
                "The URL contains control characters (such as %00); ids, cursors and filters "
                "never do.",
                code="invalid_url",
            )
            await send_json(send, 400, error.to_body())
            return
        method = scope["method"]
        limit, setting = _limit_for(method, scope["path"])
        if method not in _BODY_METHODS or limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
                await send_json(send, 413, _too_large(limit, setting).to_body())
                return

        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            size += len(message.get("body", b""))
            if size > limit:
                await send_json(send, 413, _too_large(limit, setting).to_body())
                return
            messages.append(message)
            if not message.get("more_body", False):
                break

        if size and scope["path"].startswith("/v1/") and not _is_json(scope):
            await send_json(send, 415, _not_json(scope).to_body())
            return

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()  # after the body: wait for a disconnect, as the server would

        await self.app(scope, replay, send)
