"""/v1/usage and /v1/budget: what a team spent, reserved and may still spend this month."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Admin, Reader
from service.db import session_scope
from service.errors import InvalidRequest
from service.jobs import budgets
from service.jobs.wire import BudgetObject, UsageObject

router = APIRouter(tags=["usage"])


class BudgetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    monthly_budget_usd: float | None = Field(..., ge=0)


_MONTH = re.compile(r"(\d{4})-(\d{2})")


def _month(value: str | None) -> str | None:
    """YYYY-MM within the calendar the database and Python share (the month after must
    exist too: usage reads up to the first day of the next month)."""
    if value is None:
        return None
    match = _MONTH.fullmatch(value)
    if not match or not 1970 <= int(match[1]) <= 9998 or not 1 <= int(match[2]) <= 12:
        raise InvalidRequest(
            f"month must be a calendar month like 2026-11, from 1970-01 to 9998-12; got "
            f"{value[:40]!r}.",
            param="month",
            code="invalid_month",
        )
    return value


@router.get("/v1/usage", response_model=UsageObject)
def usage(principal: Reader, month: str | None = None) -> dict[str, Any]:
    month = _month(month)
    with session_scope() as session:
        return budgets.usage(session, principal.team_id, month)


@router.get("/v1/budget", response_model=BudgetObject)
def get_budget(principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return {
            "object": "budget",
            "monthly_budget_usd": budgets.budget_for(session, principal.team_id),
        }


@router.put("/v1/budget", response_model=BudgetObject)
def set_budget(body: BudgetUpdate, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        row = budgets.set_budget(session, principal.team_id, body.monthly_budget_usd)
        return {"object": "budget", "monthly_budget_usd": row.monthly_budget_usd}
