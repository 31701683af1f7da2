"""Teams, API keys and authentication."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from service import ids
from service.config import get_settings
from service.db import utcnow
from service.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, Unauthenticated
from service.tenants import keys
from service.tenants.models import ApiKey, Role, Team

# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """Who is calling: derived from the API key only, never from a header."""

    team_id: str
    key_id: str
    role: Role

    def require(self, *allowed: Role) -> None:
        if self.role not in allowed:
            raise PermissionDenied(
                f"This API key has the role '{self.role}', which cannot perform this action "
                f"(needs {' or '.join(r.value for r in allowed)})."
            )


def create_team(session: Session, name: str) -> Team:
    name = name.strip()
    if not name:
        raise InvalidRequest("Team name must not be empty.", param="name")
    if session.exec(select(Team).where(Team.name == name)).first():
        raise Conflict(f"A team named '{name}' already exists.", param="name")
    team = Team(id=ids.team_id(), name=name)
    session.add(team)
    session.flush()
    return team


def find_team(session: Session, id_or_name: str) -> Team:
    team = (
        session.get(Team, id_or_name)
        or session.exec(select(Team).where(Team.name == id_or_name)).first()
    )
    if team is None:
        raise NotFound(f"No team '{id_or_name}'.", param="team")
    return team


def create_key(
    session: Session, team_id: str, role: Role | str, name: str = ""
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored."""
    try:
        role = Role(role)
    except ValueError:
        raise InvalidRequest(
            f"Unknown role '{role}'; use one of admin, member, viewer.", param="role"
        ) from None
    token = keys.generate_key()
    api_key = ApiKey(
        id=ids.api_key_id(),
        team_id=team_id,
        name=name,
        role=role.value,
        prefix=keys.display_prefix(token),
        key_hash=keys.hash_key(token, get_settings().secret_key.get_secret_value()),
    )
    session.add(api_key)
    session.flush()
    return api_key, token


def revoke_key(session: Session, team_id: str, key_id: str) -> ApiKey:
    api_key = session.exec(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.team_id == team_id)
    ).first()
    if api_key is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        session.add(api_key)
    return api_key


def authenticate(session: Session, token: str | None) -> Principal:
    if not token:
        raise Unauthenticated(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    if not keys.looks_like_key(token):
        raise Unauthenticated("Incorrect API key provided.")
    digest = keys.hash_key(token, get_settings().secret_key.get_secret_value())
    api_key = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if api_key is None:
        raise Unauthenticated("Incorrect API key provided.")
    if api_key.revoked_at is not None:
        raise Unauthenticated("This API key has been revoked.", code="revoked_api_key")
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        session.execute(sa.update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=now))
    return Principal(team_id=api_key.team_id, key_id=api_key.id, role=Role(api_key.role))
