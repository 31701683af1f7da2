"""/v1/api_keys: a team's keys (admins only). The plaintext is returned once, at creation
or rotation; the database holds only its keyed hash and a display prefix."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.auth import Admin
from api.pagination import ListObject, page
from service.db import session_scope
from service.tenants import service as tenants
from service.tenants.wire import ApiKeyDeleted, ApiKeyObject, ApiKeyWithSecret

router = APIRouter(prefix="/v1/api_keys", tags=["api keys"])


class CreateKeyInput(BaseModel):
    name: str = Field(default="", max_length=128)
    role: Literal["admin", "member", "viewer"] = "member"


class RotateKeyInput(BaseModel):
    # Lets clients switch over: the old key keeps working this long (at most a day).
    grace_seconds: int = Field(default=0, ge=0, le=86400)


@router.post("", response_model=ApiKeyWithSecret)
def create_key(body: CreateKeyInput, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        api_key, token = tenants.create_key(session, principal.team_id, body.role, body.name)
        return tenants.key_object(api_key, token)


@router.get("", response_model=ListObject[ApiKeyObject])
def list_keys(
    principal: Admin,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = tenants.list_keys(session, principal.team_id, after=after, limit=limit)
        return page([tenants.key_object(k) for k in rows], has_more)


@router.get("/{key_id}", response_model=ApiKeyObject)
def retrieve_key(key_id: str, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return tenants.key_object(tenants.get_key(session, principal.team_id, key_id))


@router.post("/{key_id}/revoke", response_model=ApiKeyObject)
def revoke_key(key_id: str, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return tenants.key_object(tenants.revoke_key(session, principal.team_id, key_id))


@router.delete("/{key_id}", response_model=ApiKeyDeleted)
def delete_key(key_id: str, principal: Admin) -> dict[str, Any]:
    # Keys are never deleted (the audit log refers to them); DELETE revokes, as OpenAI's does.
    with session_scope() as session:
        api_key = tenants.revoke_key(session, principal.team_id, key_id)
        return {"id": api_key.id, "object": "api_key.deleted", "deleted": True}


@router.post("/{key_id}/rotate", response_model=ApiKeyWithSecret)
def rotate_key(key_id: str, principal: Admin, body: RotateKeyInput | None = None) -> dict[str, Any]:
    with session_scope() as session:
        api_key, token = tenants.rotate_key(
            session,
            principal.team_id,
            key_id,
            grace_seconds=body.grace_seconds if body else 0,
        )
        return tenants.key_object(api_key, token)
