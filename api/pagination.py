"""OpenAI's list envelope."""

from __future__ import annotations

from typing import Any


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more}
