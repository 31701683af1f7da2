"""Request ids, access logs and the rate limit's pre-check, as a plain ASGI middleware (no
buffering of bodies)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import ratelimit

log = structlog.get_logger("ftq.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _VALID_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
        structlog.contextvars.clear_contextvars()
        client = scope.get("client")
        structlog.contextvars.bind_contextvars(
            request_id=request_id, process="api", client_ip=client[0] if client else None
        )
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                present = {name.lower() for name, _ in message.get("headers", [])}
                for name, value in ratelimit.response_headers(scope).items():
                    if name.lower().encode() not in present:  # a 429 carries its own
                        extra.append((name.lower().encode(), value.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            # Over its key's limit, or a token known to fail: refused before any other work.
            refusal = await ratelimit.precheck(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
            if status["code"] == 404:
                await _audit_not_found(scope)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status["code"],
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )


async def _audit_not_found(scope: Scope) -> None:
    """A 404 to an authenticated caller may be a probe for another team's ids (BOLA): audit
    it with the caller's key, in its own transaction (the request's own work rolled back)."""
    principal = scope.get("state", {}).get("principal")
    if principal is None:
        return  # unknown URL or unauthenticated: nothing was looked up

    def write() -> None:
        from service.db import session_scope
        from service.tenants import audit

        with session_scope() as session:
            target = f"{scope['method']} {scope['path']}"
            audit.record(session, principal, "access.not_found", "route", target)

    try:
        await anyio.to_thread.run_sync(write)
    except Exception:
        log.exception("audit_not_found_failed")
