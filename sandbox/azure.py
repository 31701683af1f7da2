"""Azure OpenAI addressing in front of the sandbox's OpenAI routes.

Azure serves the same API under ``/openai/...`` with an ``api-version`` query parameter and
an ``api-key`` header, and inference under ``/openai/deployments/{deployment}/...`` where
the deployment names the model. This middleware checks both, then rewrites the request onto
the ``/v1`` routes (the deployment becomes the body's ``model``) with a bearer token, so
every route, fault and state is shared. The request log keeps the Azure path and query.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.errors import error_body

AZURE_PREFIX = "/openai/"
ORIGINAL_PATH = "sandbox.azure_path"  # scope key read by the request log
_DEPLOYMENT = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)(?P<rest>/.*)$")


async def _reply(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class AzureMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(AZURE_PREFIX):
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if not re.search(r"(^|&)api-version=[^&]+", query):
            await _reply(
                send,
                404,
                error_body(
                    "Resource not found: Azure OpenAI needs the api-version query parameter.",
                    code="404",
                ),
            )
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
        api_key = dict(headers).get(b"api-key", b"").decode("latin-1").strip()
        if not api_key:
            await _reply(
                send,
                401,
                error_body(
                    "Access denied due to invalid subscription key or wrong API endpoint. "
                    "Make sure to provide a valid key for an active subscription.",
                    code="401",
                ),
            )
            return
        headers.append((b"authorization", f"Bearer {api_key}".encode()))
        path = scope["path"]
        deployment = _DEPLOYMENT.match(path)
        new_path = "/v1" + (deployment["rest"] if deployment else path[len("/openai") :])
        new_scope = {
            **scope,
            "path": new_path,
            "raw_path": new_path.encode(),
            "headers": headers,
            ORIGINAL_PATH: path,
        }
        if deployment is None:
            await self.app(new_scope, receive, send)
            return
        # The deployment names the model: put it into the JSON body.
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            document = None
        if isinstance(document, dict):
            document["model"] = deployment["deployment"]
            body = json.dumps(document).encode()
        new_scope["headers"] = [(k, v) for k, v in headers if k.lower() != b"content-length"] + [
            (b"content-length", str(len(body)).encode())
        ]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(new_scope, replay, send)
