"""ASGI middleware applying ``Idempotency-Key`` to every POST under /v1.

JSON bodies are fingerprinted in full; multipart uploads by their declared length (their
boundary changes between retries). Streaming responses are not replayable and release
the key; 5xx answers release it too, so the client's retry runs again.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import idempotency
from service.errors import FtqError, PayloadTooLarge

MAX_KEY_LENGTH = 255
MAX_JSON_BODY = 8 * 1024 * 1024
# Errors a retry may legitimately answer differently: never frozen under a key.
_NOT_STORED = {401, 403, 409, 429}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_json(
    send: Send, status: int, body: dict, extra: list[tuple[bytes, bytes]] | None = None
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
            await _send_json(send, 400, error.to_body())
            return
        auth = (_header(scope, b"authorization") or "").encode()
        content_type = _header(scope, b"content-type") or ""
        request_line = (
            f"{scope['method']} {scope['path']}?{scope.get('query_string', b'').decode()}".encode()
        )

        body_messages: list[Message] = []
        if content_type.startswith("multipart/"):
            fingerprint = idempotency.digest(
                request_line, (_header(scope, b"content-length") or "").encode()
            )
            downstream_receive = receive
        else:
            body = b""
            while True:
                message = await receive()
                body_messages.append(message)
                body += message.get("body", b"")
                if len(body) > MAX_JSON_BODY:
                    await _send_json(
                        send, 413, PayloadTooLarge("Request body too large.").to_body()
                    )
                    return
                if not message.get("more_body"):
                    break
            fingerprint = idempotency.digest(request_line, body)

            async def downstream_receive() -> Message:
                return body_messages.pop(0) if body_messages else {"type": "http.disconnect"}

        scope_hash = idempotency.digest(auth)
        try:
            stored = await run_in_threadpool(idempotency.begin, scope_hash, key, fingerprint)
        except FtqError as error:
            await _send_json(send, error.status_code, error.to_body())
            return
        if stored is not None:
            headers = [(b"idempotent-replayed", b"true")]
            if stored.content_type:
                headers.append((b"content-type", stored.content_type.encode()))
            headers.append((b"content-length", str(len(stored.body)).encode()))
            await send(
                {"type": "http.response.start", "status": stored.status_code, "headers": headers}
            )
            await send({"type": "http.response.body", "body": stored.body})
            return

        captured: dict = {"status": 500, "content_type": None, "body": b"", "streaming": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        captured["content_type"] = value.decode("latin-1")
                        captured["streaming"] = value.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, downstream_receive, capture)
        finally:
            status = captured["status"]
            keep = status < 500 and status not in _NOT_STORED and not captured["streaming"]
            response = (
                idempotency.StoredResponse(status, captured["content_type"], captured["body"])
                if keep
                else None
            )
            await run_in_threadpool(idempotency.finish, scope_hash, key, response)
