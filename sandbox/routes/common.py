"""Helpers shared by the route modules."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from sandbox.errors import bad_request
from sandbox.runtime import Runtime

_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


async def read_json(request: Request, *, allow_empty: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise bad_request(_BAD_JSON)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request(_BAD_JSON) from exc


def check_limit(limit: int | None, default: int, maximum: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise bad_request(
            f"Invalid value for 'limit': expected an integer between 1 and {maximum}.",
            param="limit",
            code="invalid_value",
        )
    return limit


def organization(request: Request) -> str:
    return request.headers.get("openai-organization") or "sandbox"
