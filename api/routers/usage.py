"""/v1/usage and /v1/budget: what a team spent, reserved and may still spend this month."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Admin, Reader
from service.db import session_scope
from service.jobs import budgets

router = APIRouter(tags=["usage"])


class BudgetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    monthly_budget_usd: float | None = Field(..., ge=0)


@router.get("/v1/usage")
def usage(principal: Reader, month: str | None = None) -> dict[str, Any]:
    with session_scope() as session:
        return budgets.usage(session, principal.team_id, month)


@router.get("/v1/budget")
def get_budget(principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return {
            "object": "budget",
            "monthly_budget_usd": budgets.budget_for(session, principal.team_id),
        }


@router.put("/v1/budget")
def set_budget(body: BudgetUpdate, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        row = budgets.set_budget(session, principal.team_id, body.monthly_budget_usd)
        return {"object": "budget", "monthly_budget_usd": row.monthly_budget_usd}
