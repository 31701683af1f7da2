"""Keyset pagination, written once: every list ftq serves pages the same way.

The rule:

- a list has a fixed order over a tuple of columns that ends in a unique one (``created_at,
  id`` or an insertion ``pk``), newest first unless the route offers ``order=asc``;
- ``after`` is the id of the last object the caller saw; the next page holds the objects
  strictly after it in that order, so inserts and deletes never repeat or skip one;
- the cursor is looked up within the list's *ownership* scope (the team, the job, the
  endpoint), never within its filters: an object that left a filter (a delivery that
  succeeded meanwhile) still anchors the next page;
- an ``after`` that is not in that scope — unknown, deleted, another team's — answers the
  same everywhere: 400 ``invalid_request_error``, ``param: "after"``, code
  ``invalid_cursor``; another team's id is indistinguishable from a missing one;
- ``has_more`` comes from reading one row past ``limit``.

``ListObject`` is OpenAI's list envelope as a typed wire object; every list route returns
one, with ``first_id``/``last_id`` (OpenAI's checkpoints and files lists carry them; the
SDK ignores them elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, select
from sqlmodel.sql.expression import SelectOfScalar

from service.errors import InvalidRequest

Row = TypeVar("Row")
Item = TypeVar("Item")

INVALID_CURSOR = "invalid_cursor"


class ListObject(BaseModel, Generic[Item]):
    """``{"object": "list", "data": [...], "has_more": bool}`` plus first/last ids."""

    object: Literal["list"] = "list"
    data: list[Item]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """The envelope as a plain dict, for routes that build their items as dicts."""
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
    }


def unknown_cursor(after: str) -> InvalidRequest:
    return InvalidRequest(
        f"No object with id '{after}' to list after: pass the id of the last object of "
        "the previous page of this same list.",
        param="after",
        code=INVALID_CURSOR,
    )


def after_condition(
    session: Session,
    *,
    after: str,
    id_column: Any,
    order: Sequence[Any],
    scope: Sequence[Any],
    descending: bool = True,
) -> sa.ColumnElement[bool]:
    """The condition selecting the rows that follow ``after`` in ``order``.

    ``id_column`` is the public id the caller passes; ``scope`` the ownership conditions
    (team, parent object) that the anchor must satisfy.
    """
    anchor = session.execute(sa.select(*order).where(id_column == after, *scope)).first()
    if anchor is None:
        raise unknown_cursor(after)
    keys = sa.tuple_(*order)
    bound = sa.tuple_(*(sa.literal(value) for value in anchor))
    return keys < bound if descending else keys > bound


def ordered(
    query: SelectOfScalar[Row], order: Sequence[Any], *, descending: bool = True
) -> SelectOfScalar[Row]:
    return query.order_by(*(sa.desc(c) if descending else sa.asc(c) for c in order))


def keyset_page(
    session: Session,
    query: SelectOfScalar[Row],
    *,
    after: str | None,
    limit: int,
    id_column: Any,
    order: Sequence[Any],
    scope: Sequence[Any],
    descending: bool = True,
) -> tuple[list[Row], bool]:
    """One page of ``query`` (already filtered) and whether more follow."""
    if after is not None:
        query = query.where(
            after_condition(
                session,
                after=after,
                id_column=id_column,
                order=order,
                scope=scope,
                descending=descending,
            )
        )
    rows = list(session.exec(ordered(query, order, descending=descending).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def scoped_select(model: type[Row], scope: Sequence[Any]) -> SelectOfScalar[Row]:
    """``SELECT model WHERE scope``: the usual start of a list query."""
    return select(model).where(*scope)
