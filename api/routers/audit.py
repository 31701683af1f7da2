"""/v1/audit_events: the team's audit log, newest first (admins only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import Admin
from api.pagination import page
from service.db import session_scope
from service.tenants import audit

router = APIRouter(prefix="/v1/audit_events", tags=["audit"])


def _instant(value: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.UTC) if value is not None else None


@router.get("")
def list_audit_events(
    principal: Admin,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    actor_key_id: str | None = None,
    since: Annotated[int | None, Query(ge=0, description="Unix seconds, inclusive")] = None,
    until: Annotated[int | None, Query(ge=0, description="Unix seconds, exclusive")] = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    filters = audit.AuditFilter(
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor_key_id=actor_key_id,
        since=_instant(since),
        until=_instant(until),
    )
    with session_scope() as session:
        rows, has_more = audit.list_events(
            session, principal.team_id, filters, after=after, limit=limit
        )
        data = [audit.event_object(e) for e in rows]
    return {**page(data, has_more), "last_id": data[-1]["id"] if data else None}
