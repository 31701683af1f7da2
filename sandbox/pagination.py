"""Cursor pagination shared by every list endpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def cursor_page(
    items: Sequence[T],
    *,
    after: str | None,
    limit: int,
    key: Callable[[T], str],
) -> tuple[list[T], bool]:
    """Items after the one whose id is ``after`` (already in display order), and has_more.

    An unknown cursor gives an empty page rather than starting over, so a client paging
    with a stale cursor cannot loop.
    """
    start = 0
    if after is not None:
        ids = [key(item) for item in items]
        if after not in ids:
            return [], False
        start = ids.index(after) + 1
    window = list(items[start : start + limit])
    return window, start + limit < len(items)


def list_body(data: list[dict[str, Any]], has_more: bool, **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, **extra}
