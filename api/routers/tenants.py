"""/v1/tenants: platform operators manage teams (operator keys only; team keys get 403)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Operator
from api.pagination import ListObject, page
from service.db import session_scope
from service.files import quota as file_quota
from service.jobs import quota as job_quota
from service.tenants import limits
from service.tenants import service as tenants
from service.tenants.wire import TeamApiKeyObject, TeamObject, TeamWithLimits

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


class CreateTeamInput(BaseModel):
    name: str = Field(min_length=1, max_length=128)


class LimitsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_active_jobs: int | None = Field(default=None, ge=0)
    max_stored_bytes: int | None = Field(default=None, ge=0)
    max_files: int | None = Field(default=None, ge=0)
    requests_per_minute: int | None = Field(default=None, ge=1)


class UpdateTeamInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Fields present set an override; a null value clears it back to the default.
    limits: LimitsInput


class CreateTeamKeyInput(BaseModel):
    name: str = Field(default="", max_length=128)
    role: Literal["admin", "member", "viewer"] = "admin"


def _usage(session: Any, team_id: str) -> dict[str, int]:
    files = file_quota.usage(session, team_id)
    return {
        "files": files.files,
        "stored_bytes": files.stored_bytes,
        "active_jobs": job_quota.active_jobs(session, team_id),
    }


def _team(session: Any, team_id: str) -> dict[str, Any]:
    return {
        **tenants.team_object(tenants.get_team(session, team_id)),
        "limits": limits.limits_object(session, team_id, _usage(session, team_id)),
    }


@router.post("", response_model=TeamWithLimits)
def create_team(body: CreateTeamInput, principal: Operator) -> dict[str, Any]:
    with session_scope() as session:
        team = tenants.create_team(session, body.name)
        return _team(session, team.id)


@router.get("", response_model=ListObject[TeamObject])
def list_teams(
    principal: Operator,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = tenants.list_teams(session, after=after, limit=limit)
        return page([tenants.team_object(t) for t in rows], has_more)


@router.get("/{team_id}", response_model=TeamWithLimits)
def retrieve_team(team_id: str, principal: Operator) -> dict[str, Any]:
    with session_scope() as session:
        return _team(session, team_id)


@router.patch("/{team_id}", response_model=TeamWithLimits)
def update_team(team_id: str, body: UpdateTeamInput, principal: Operator) -> dict[str, Any]:
    with session_scope() as session:
        tenants.get_team(session, team_id)
        limits.set_overrides(session, team_id, body.limits.model_dump(exclude_unset=True))
        return _team(session, team_id)


@router.post("/{team_id}/api_keys", response_model=TeamApiKeyObject)
def create_team_key(
    team_id: str, principal: Operator, body: CreateTeamKeyInput | None = None
) -> dict[str, Any]:
    """A key in another team, typically its first admin key (shown once)."""
    body = body or CreateTeamKeyInput()
    with session_scope() as session:
        tenants.get_team(session, team_id)
        api_key, token = tenants.create_key(session, team_id, body.role, body.name)
        return {**tenants.key_object(api_key, token), "team_id": team_id}
