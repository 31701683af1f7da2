"""OpenAI's list envelope for routers: one definition, in ``service.pagination``."""

from __future__ import annotations

from typing import Any

from service.pagination import ListObject, list_object

__all__ = ["ListObject", "page"]


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """``{"object": "list", "data", "has_more", "first_id", "last_id"}``."""
    return list_object(data, has_more)
