"""ASGI middleware: sandbox headers, bearer auth, request log and fault injection for /v1."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.errors import error_body
from sandbox.ids import random_token
from sandbox.requestlog import RequestRecord, summarize_body
from sandbox.runtime import Runtime

_JOBS_PATH = "/v1/fine_tuning/jobs"


class DroppedConnection(Exception):
    """Raised after a partial response so the server closes the connection mid-body."""


class _HideDroppedConnections(logging.Filter):
    # Uvicorn logs every exception escaping the app; injected drops are expected, not errors.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


def quiet_dropped_connection_logs() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in logger.filters):
        logger.addFilter(_HideDroppedConnections())


def _json_message(status: int, body: dict[str, Any], headers: dict[str, str]) -> list[Message]:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": raw_headers},
        {"type": "http.response.body", "body": payload, "more_body": False},
    ]


def _ftq_job_id(method: str, path: str, body: bytes) -> str | None:
    if method != "POST" or path.rstrip("/") != _JOBS_PATH:
        return None
    try:
        metadata = json.loads(body).get("metadata") or {}
        value = metadata.get("ftq_job_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class SandboxMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        route_templates: Callable[[], Iterable[str]],
    ) -> None:
        self.app = app
        self.runtime = runtime
        self._route_templates = route_templates
        self._route_patterns: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_sandbox_headers(send)
        if not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        await self._handle_v1(scope, receive, send)

    def _with_sandbox_headers(self, send: Send) -> Send:
        request_id = f"req_{random_token(24)}"

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-sandbox", b"true"), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        return wrapped

    def _route_template(self, path: str) -> str:
        if self._route_patterns is None:
            # Built on first use: templates such as /v1/files/{file_id} become regexes.
            self._route_patterns = [
                (_template_regex(template), template) for template in self._route_templates()
            ]
        for pattern, template in self._route_patterns:
            if pattern.match(path):
                return template
        return path

    async def _handle_v1(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        started = time.monotonic()
        record = self.runtime.requests.start(
            time=time.time(),
            method=method,
            # Azure-style requests are logged as sent (/openai/...), routed as /v1.
            path=scope.get("sandbox.azure_path", path),
            route=self._route_template(path),
            query=scope.get("query_string", b"").decode("latin-1"),
            body_summary=summarize_body(body, headers.get("content-type", "")),
            ftq_job_id=_ftq_job_id(method, path, body),
        )
        try:
            await self._dispatch(scope, receive, send, body, headers, record)
        finally:
            record.duration_ms = round((time.monotonic() - started) * 1000, 1)

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        headers: dict[str, str],
        record: RequestRecord,
    ) -> None:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            record.status_code, record.outcome = 401, "error"
            await self._send_all(send, _json_message(401, _auth_error(), {}))
            return

        config = self.runtime.config
        fault_draw, slow_draw = self.runtime.draw()
        if config.fault_paths and not re.search(config.fault_paths, scope["path"]):
            fault_draw, slow_draw = 1.0, 1.0  # outside the faulted paths: never faulted
        if slow_draw < config.slow_rate and config.slow_seconds > 0:
            await asyncio.sleep(config.slow_seconds)

        fault = _pick_fault(
            fault_draw, config.drop_rate, config.error_rate_429, config.error_rate_500
        )
        record.fault = fault
        if fault == "drop" and config.drop_mode == "before":
            record.outcome = "dropped"
            await self._drop(send, None)
        if fault == "429":
            record.status_code, record.outcome = 429, "fault_429"
            retry_after = {"Retry-After": _format_seconds(config.retry_after_seconds)}
            await self._send_all(send, _json_message(429, _rate_limit_error(), retry_after))
            return
        if fault == "500":
            record.status_code, record.outcome = 500, "fault_500"
            await self._send_all(send, _json_message(500, _server_error(), {}))
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        held: list[Message] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status_code = message["status"]
                record.outcome = "ok" if message["status"] < 400 else "error"
            if fault == "drop":
                held.append(message)  # drop after processing: keep the response to truncate it
            else:
                await send(message)

        try:
            await self.app(scope, replay, capture)
        except BaseException:
            if record.outcome == "in_flight":
                record.outcome = "aborted"
            raise
        if fault == "drop":
            record.outcome = "dropped"
            start = next((m for m in held if m["type"] == "http.response.start"), None)
            await self._drop(send, start)

    async def _send_all(self, send: Send, messages: list[Message]) -> None:
        for message in messages:
            await send(message)

    async def _drop(self, send: Send, start: Message | None) -> None:
        # Promise a body, deliver part of it and fail: the server then closes the connection,
        # which the client sees as an incomplete response (httpx2 RemoteProtocolError).
        status = start["status"] if start else 200
        headers = [
            (k, v) for k, v in (start or {}).get("headers", []) if k.lower() != b"content-length"
        ]
        headers.append((b"content-length", b"4096"))
        if not any(k.lower() == b"content-type" for k, _ in headers):
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
        raise DroppedConnection("sandbox fault: connection dropped")


def _template_regex(template: str) -> re.Pattern[str]:
    pieces = re.split(r"\{[^}]+\}", template)
    return re.compile("^" + "[^/]+".join(re.escape(piece) for piece in pieces) + "/?$")


def _pick_fault(draw: float, drop: float, rate_429: float, rate_500: float) -> str | None:
    if draw < drop:
        return "drop"
    if draw < drop + rate_429:
        return "429"
    if draw < drop + rate_429 + rate_500:
        return "500"
    return None


def _auth_error() -> dict[str, Any]:
    return error_body(
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        code="invalid_api_key",
    )


def _rate_limit_error() -> dict[str, Any]:
    return error_body(
        "Rate limit reached for requests (injected by the ftq sandbox). Please try again later.",
        code="rate_limit_exceeded",
        type_="requests",
    )


def _server_error() -> dict[str, Any]:
    return error_body(
        "The server had an error while processing your request. Sorry about that! "
        "(injected by the ftq sandbox)",
        type_="server_error",
    )
