"""Teams, API keys and authentication; every mutation here is audited in its transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from service import ids
from service.config import get_settings
from service.db import utcnow
from service.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, Unauthenticated
from service.pagination import keyset_page
from service.tenants import audit, keys
from service.tenants.models import PLATFORM_TEAM_NAME, ApiKey, ApiKeyAddress, Role, Team

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
    audit.record(session, None, "team.create", "team", team.id, {"name": name}, team_id=team.id)
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
    if role == Role.operator and not _is_platform_team(session, team_id):
        # Operator keys manage every team; they only exist on the built-in platform team.
        raise InvalidRequest("Operator keys belong to the platform team only.", param="role")
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
    audit.record(
        session,
        None,
        "api_key.create",
        "api_key",
        api_key.id,
        {"role": role.value, "name": name, "prefix": api_key.prefix},
        team_id=team_id,
    )
    return api_key, token


def revoke_key(session: Session, team_id: str, key_id: str) -> ApiKey:
    api_key = session.exec(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.team_id == team_id)
    ).first()
    if api_key is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
    now = utcnow()
    if api_key.revoked_at is None or api_key.revoked_at > now:
        # Also ends a rotation grace period early.
        api_key.revoked_at = now
        session.add(api_key)
        audit.record(session, None, "api_key.revoke", "api_key", api_key.id, team_id=team_id)
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
    now = utcnow()
    # A rotated key stays valid until its grace period ends (revoked_at in the future).
    if api_key.revoked_at is not None and api_key.revoked_at <= now:
        raise Unauthenticated("This API key has been revoked.", code="revoked_api_key")
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        session.execute(
            sa.update(ApiKey).where(col(ApiKey.id) == api_key.id).values(last_used_at=now)
        )
    principal = Principal(team_id=api_key.team_id, key_id=api_key.id, role=Role(api_key.role))
    _note_address(session, principal)
    return principal


# (key id, ip) pairs this process has already recorded; bounded, so a flood cannot grow it.
_known_addresses: set[tuple[str, str]] = set()
_KNOWN_ADDRESSES_MAX = 50_000


def _note_address(session: Session, principal: Principal) -> None:
    """Record the first use of a key from an address, audited as ``api_key.new_address``."""
    _request_id, ip = audit.request_context()
    if not ip or (principal.key_id, ip) in _known_addresses:
        return
    values = {"key_id": principal.key_id, "ip": ip, "first_seen_at": utcnow()}
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(ApiKeyAddress)
    # ON CONFLICT DO NOTHING: two first requests at once must not fail each other.
    result = session.execute(insert.values(**values).on_conflict_do_nothing())
    if result.rowcount:  # type: ignore[attr-defined]
        audit.record(
            session, principal, "api_key.new_address", "api_key", principal.key_id, {"ip": ip}
        )
    if len(_known_addresses) >= _KNOWN_ADDRESSES_MAX:
        _known_addresses.clear()
    _known_addresses.add((principal.key_id, ip))


@dataclass(frozen=True)
class _KeyRef:
    team_id: str
    key_id: str


def record_auth_failure(session: Session, token: str | None, error: Unauthenticated) -> None:
    """Audit a refused credential: the display prefix when the key is well formed, never more."""
    details: dict[str, Any] = {"code": error.code}
    team_id = key_id = None
    if token and keys.looks_like_key(token):
        details["key_prefix"] = keys.display_prefix(token)
        digest = keys.hash_key(token, get_settings().secret_key.get_secret_value())
        known = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
        if known is not None:  # a revoked key: its team should see the attempt
            team_id, key_id = known.team_id, known.id
    elif token:
        details["key_prefix"] = None
    # A known (revoked) key is both the actor and the target; its team sees the attempt.
    actor = _KeyRef(team_id, key_id) if team_id and key_id else None
    audit.record(session, actor, "auth.failed", "api_key", key_id, details, team_id=team_id)


# Keys ------------------------------------------------------------------------------------
def _key_query(team_id: str, key_id: str) -> Any:
    return select(ApiKey).where(ApiKey.id == key_id, ApiKey.team_id == team_id)


def list_keys(
    session: Session, team_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[ApiKey], bool]:
    scope = [col(ApiKey.team_id) == team_id]
    return keyset_page(
        session,
        select(ApiKey).where(*scope),
        after=after,
        limit=limit,
        id_column=col(ApiKey.id),
        order=(col(ApiKey.created_at), col(ApiKey.id)),
        scope=scope,
    )


def get_key(session: Session, team_id: str, key_id: str) -> ApiKey:
    api_key = session.exec(_key_query(team_id, key_id)).first()
    if api_key is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
    return api_key


MAX_ROTATION_GRACE = dt.timedelta(hours=24)


def rotate_key(
    session: Session, team_id: str, key_id: str, *, grace_seconds: int = 0
) -> tuple[ApiKey, str]:
    """A new key with the old one's name and role; the old one stops now or after the grace."""
    old = session.exec(_key_query(team_id, key_id).with_for_update()).first()
    now = utcnow()
    if old is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
    if old.revoked_at is not None and old.revoked_at <= now:
        raise InvalidRequest(f"API key '{key_id}' is revoked; it cannot be rotated.")
    grace = dt.timedelta(seconds=grace_seconds)
    if grace < dt.timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise InvalidRequest(
            f"grace_seconds must be between 0 and {int(MAX_ROTATION_GRACE.total_seconds())}.",
            param="grace_seconds",
        )
    old.revoked_at = now + grace
    session.add(old)
    new, token = create_key(session, team_id, old.role, old.name)
    audit.record(
        session,
        None,
        "api_key.rotate",
        "api_key",
        old.id,
        {"new_key_id": new.id, "grace_seconds": grace_seconds},
        team_id=team_id,
    )
    return new, token


def key_object(api_key: ApiKey, token: str | None = None) -> dict[str, Any]:
    """The API's view of a key; the plaintext only right after creation or rotation."""
    now = utcnow()
    revoked = api_key.revoked_at is not None and api_key.revoked_at <= now
    body: dict[str, Any] = {
        "id": api_key.id,
        "object": "api_key",
        "name": api_key.name,
        "role": api_key.role,
        "prefix": api_key.prefix,
        "created_at": int(api_key.created_at.timestamp()),
        "last_used_at": int(api_key.last_used_at.timestamp()) if api_key.last_used_at else None,
        "revoked": revoked,
        "revoked_at": int(api_key.revoked_at.timestamp()) if api_key.revoked_at else None,
    }
    if token is not None:
        body["key"] = token
    return body


# Teams and operators -----------------------------------------------------------------------
def _is_platform_team(session: Session, team_id: str) -> bool:
    team = session.get(Team, team_id)
    return team is not None and team.name == PLATFORM_TEAM_NAME


def platform_team(session: Session) -> Team:
    """The built-in team that holds operator keys, created on first use."""
    team = session.exec(select(Team).where(Team.name == PLATFORM_TEAM_NAME)).first()
    return team or create_team(session, PLATFORM_TEAM_NAME)


def create_operator_key(session: Session, name: str = "") -> tuple[ApiKey, str]:
    return create_key(session, platform_team(session).id, Role.operator, name)


def list_teams(
    session: Session, *, after: str | None = None, limit: int = 20
) -> tuple[list[Team], bool]:
    scope = [col(Team.name) != PLATFORM_TEAM_NAME]
    return keyset_page(
        session,
        select(Team).where(*scope),
        after=after,
        limit=limit,
        id_column=col(Team.id),
        order=(col(Team.created_at), col(Team.id)),
        scope=scope,
    )


def get_team(session: Session, team_id: str) -> Team:
    team = session.get(Team, team_id)
    if team is None or team.name == PLATFORM_TEAM_NAME:
        raise NotFound(f"No team '{team_id}'.", param="team_id")
    return team


def team_object(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "object": "team",
        "name": team.name,
        "created_at": int(team.created_at.timestamp()),
    }
