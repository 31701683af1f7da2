"""ASGI middleware applying ``Idempotency-Key`` to every POST under /v1.

Every body — JSON, multipart uploads, anything streamed — is fingerprinted in full while it
streams (``service.idempotency.BodyFingerprint``), never buffered here: an upload keeps
flowing into its staged file. The key is reserved before the request runs; a key that
already holds a finished request has the incoming body read and hashed, then the stored
answer is replayed (same fingerprint) or refused with 409 (another one).

Not stored, so the client's retry runs again: 5xx answers, the errors a retry may answer
differently (401, 403, 409, 429), streaming responses, and any answer given before the
body was read to its end (its fingerprint would cover only part of the request).
"""

from __future__ import annotations

import json
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.uploads import is_upload_route
from service import idempotency
from service.errors import FtqError

MAX_KEY_LENGTH = 255
# Errors a retry may legitimately answer differently: never frozen under a key.
_NOT_STORED = {401, 403, 409, 429}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def send_json(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": payload})


def _fingerprint_for(scope: Scope) -> idempotency.BodyFingerprint:
    media_type, params = parse_options_header(_header(scope, b"content-type") or "")
    boundary = params.get(b"boundary") if media_type.startswith(b"multipart/") else None
    query = scope.get("query_string", b"").decode("latin-1")
    request_line = f"{scope['method']} {scope['path']}?{query}".encode()
    return idempotency.BodyFingerprint(request_line, media_type.lower(), boundary)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if not key or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if len(key) > MAX_KEY_LENGTH:
            error = FtqError(
                "Idempotency-Key must be at most 255 characters.", param="Idempotency-Key"
            )
            await send_json(send, 400, error.to_body())
            return
        scope_hash = idempotency.digest((_header(scope, b"authorization") or "").encode())
        fingerprint = _fingerprint_for(scope)
        # Other bodies are bounded by api.body_limit; an upload refused early is not drained.
        uploading = fingerprint.multipart or is_upload_route(scope["method"], scope["path"])

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                fingerprint.update(message.get("body", b""), more=message.get("more_body", False))
            return message

        try:
            existing = await run_in_threadpool(idempotency.begin, scope_hash, key)
            if existing is not None:
                while not fingerprint.complete:
                    if (await hashing_receive())["type"] == "http.disconnect":
                        return
                stored = idempotency.check_replay(existing, fingerprint.hexdigest())
        except FtqError as error:
            await send_json(send, error.status_code, error.to_body())
            return
        if existing is not None:
            await self._replay(send, stored)
            return

        captured: dict[str, Any] = {
            "status": 500,
            "content_type": None,
            "body": b"",
            "streaming": False,
        }

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A route that never reads its (bounded, non-upload) body still gets a
                # complete fingerprint: read the rest before the response ends the request.
                while not fingerprint.complete and not uploading:
                    if (await hashing_receive())["type"] == "http.disconnect":
                        break
                captured["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        captured["content_type"] = value.decode("latin-1")
                        captured["streaming"] = value.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and not captured["streaming"]:
                captured["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, hashing_receive, capture)
        finally:
            status = captured["status"]
            keep = (
                status < 500
                and status not in _NOT_STORED
                and not captured["streaming"]
                and fingerprint.complete
            )
            response = (
                idempotency.StoredResponse(status, captured["content_type"], captured["body"])
                if keep
                else None
            )
            await run_in_threadpool(
                idempotency.finish, scope_hash, key, fingerprint.hexdigest(), response
            )

    @staticmethod
    async def _replay(send: Send, stored: idempotency.StoredResponse) -> None:
        headers = [(b"idempotent-replayed", b"true")]
        if stored.content_type:
            headers.append((b"content-type", stored.content_type.encode()))
        headers.append((b"content-length", str(len(stored.body)).encode()))
        await send(
            {"type": "http.response.start", "status": stored.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": stored.body})
