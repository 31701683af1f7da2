"""/v1/migration_plan: a team's fine-tunes that shut down soon, with suggested targets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import Reader
from service.db import session_scope
from service.errors import InvalidRequest
from service.registry.plan import migration_plan
from service.registry.wire import MigrationPlanObject

router = APIRouter(tags=["models"])

MAX_WITHIN_DAYS = 3650


@router.get("/v1/migration_plan", response_model=MigrationPlanObject)
def get_migration_plan(principal: Reader, within_days: str = "45") -> dict[str, Any]:
    try:
        days = int(within_days)
    except ValueError:
        days = -1
    if not 0 <= days <= MAX_WITHIN_DAYS:
        raise InvalidRequest(
            f"within_days must be a whole number of days from 0 to {MAX_WITHIN_DAYS}; "
            f"got {within_days[:20]!r}.",
            param="within_days",
        )
    with session_scope() as session:
        return migration_plan(session, principal.team_id, days)
