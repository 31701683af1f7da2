"""/v1/audit_events: the team's audit log, newest first (admins only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import Admin
from api.pagination import ListObject, page
from service.db import session_scope
from service.errors import InvalidRequest
from service.tenants import audit
from service.tenants.wire import AuditEventObject

router = APIRouter(prefix="/v1/audit_events", tags=["audit"])


# 9999-12-31T23:59:59Z, the last instant a timestamp column and Python both represent.
MAX_UNIX_SECONDS = 253402300799
# 2001-09-09 to 2286-11-20 in milliseconds: what an easy seconds/milliseconds mix-up sends.
_PLAUSIBLE_MILLISECONDS = (10**12, 10**13 - 1)


def _instant(value: int | None, param: str) -> dt.datetime | None:
    if value is None:
        return None
    if value > MAX_UNIX_SECONDS:
        hint = (
            f" {value} looks like milliseconds: send {value // 1000}."
            if _PLAUSIBLE_MILLISECONDS[0] <= value <= _PLAUSIBLE_MILLISECONDS[1]
            else ""
        )
        raise InvalidRequest(
            f"'{param}' is in Unix seconds, at most {MAX_UNIX_SECONDS} (9999-12-31).{hint}",
            param=param,
            code="invalid_timestamp",
        )
    return dt.datetime.fromtimestamp(value, dt.UTC)


@router.get("", response_model=ListObject[AuditEventObject])
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
        since=_instant(since, "since"),
        until=_instant(until, "until"),
    )
    with session_scope() as session:
        rows, has_more = audit.list_events(
            session, principal.team_id, filters, after=after, limit=limit
        )
        return page([audit.event_object(e) for e in rows], has_more)
