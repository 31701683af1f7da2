"""Teams, API keys, limits and audit events as typed wire objects.

The rule: the ``/v1/api_keys``, ``/v1/audit_events`` and ``/v1/tenants`` routes answer
these classes. A key's plaintext (``key``) appears only in the answer that created or
rotated it; nothing here ever carries its hash.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

RoleName = Literal["admin", "member", "viewer", "operator"]


class ApiKeyObject(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    role: RoleName
    prefix: str
    created_at: int
    last_used_at: int | None = None
    revoked: bool
    revoked_at: int | None = None


class ApiKeyWithSecret(ApiKeyObject):
    """A key right after creation or rotation: the plaintext is in this answer only."""

    key: str


class TeamApiKeyObject(ApiKeyWithSecret):
    """A key an operator created inside a team (usually its first admin key)."""

    team_id: str


class ApiKeyDeleted(BaseModel):
    id: str
    object: Literal["api_key.deleted"] = "api_key.deleted"
    deleted: bool


class AuditEventObject(BaseModel):
    id: str
    object: Literal["audit_event"] = "audit_event"
    created_at: int
    team_id: str | None = None
    actor_key_id: str | None = None
    action: str
    target_type: str
    target_id: str | None = None
    request_id: str | None = None
    ip: str | None = None
    details: dict[str, Any] | None = None


class TeamUsage(BaseModel):
    files: int
    stored_bytes: int
    active_jobs: int


class TeamLimitsObject(BaseModel):
    object: Literal["team.limits"] = "team.limits"
    max_active_jobs: int
    max_stored_bytes: int
    max_files: int
    requests_per_minute: int
    overrides: dict[str, int]
    usage: TeamUsage


class TeamObject(BaseModel):
    id: str
    object: Literal["team"] = "team"
    name: str
    created_at: int


class TeamWithLimits(TeamObject):
    limits: TeamLimitsObject
