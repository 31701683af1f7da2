"""Dashboard sessions: open with a team API key, resolve on every request, close on sign-out.

The rule: a session is never more than the key it was opened with. Every request re-reads
the key, so revoking (or the end of a rotation's grace) closes its sessions at once, and the
role is the key's current role. Operator keys open none: they manage teams, not a team's
objects. Sessions expire after ``DASHBOARD_SESSION_SECONDS`` whatever their use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from service.dashboard.models import DashboardSession
from service.db import utcnow
from service.errors import InvalidRequest, Unauthenticated
from service.tenants import audit
from service.tenants.models import ApiKey, Role
from service.tenants.service import Principal, authenticate

DASHBOARD_SESSION_SECONDS = 12 * 3600  # a working day; signing in again costs a paste


@dataclass(frozen=True)
class OpenedSession:
    token: str  # the cookie value; shown to the browser once, stored only as its hash
    csrf_token: str
    principal: Principal


@dataclass(frozen=True)
class ResolvedSession:
    principal: Principal
    csrf_token: str
    expires_at: dt.datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, api_key: str) -> OpenedSession:
    """Check the key exactly as the API does, then open a session for it."""
    principal = authenticate(session, api_key.strip())
    if principal.role == Role.operator:
        raise InvalidRequest(
            "Operator keys manage teams and cannot open a team's dashboard; "
            "sign in with a team key.",
            param="api_key",
            code="operator_key",
        )
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    now = utcnow()
    session.add(
        DashboardSession(
            token_hash=_hash(token),
            key_id=principal.key_id,
            team_id=principal.team_id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=DASHBOARD_SESSION_SECONDS),
        )
    )
    # Expired rows of this key go when it signs in again; nothing else needs them.
    session.execute(
        sa.delete(DashboardSession).where(
            col(DashboardSession.key_id) == principal.key_id,
            col(DashboardSession.expires_at) <= now,
        )
    )
    audit.record(session, principal, "dashboard.sign_in", "api_key", principal.key_id)
    return OpenedSession(token, csrf, principal)


def resolve_session(session: Session, token: str | None) -> ResolvedSession:
    """The principal behind a cookie, or ``Unauthenticated`` with a code saying why."""
    if not token:
        raise Unauthenticated("Sign in with an API key.", code="no_session")
    row = session.get(DashboardSession, _hash(token))
    now = utcnow()
    if row is None:
        raise Unauthenticated("Your session has ended; sign in again.", code="no_session")
    if row.expires_at <= now:
        session.delete(row)
        raise Unauthenticated(
            "Your session expired; sign in again with your API key.", code="session_expired"
        )
    key = session.exec(select(ApiKey).where(ApiKey.id == row.key_id)).first()
    if key is None or (key.revoked_at is not None and key.revoked_at <= now):
        session.delete(row)
        raise Unauthenticated(
            "The API key behind this session was revoked; sign in with a current key.",
            code="revoked_api_key",
        )
    principal = Principal(team_id=key.team_id, key_id=key.id, role=Role(key.role))
    return ResolvedSession(principal, row.csrf_token, row.expires_at)


def close_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(
            sa.delete(DashboardSession).where(col(DashboardSession.token_hash) == _hash(token))
        )


def purge_expired(session: Session, *, batch: int = 1000) -> int:
    """Delete up to ``batch`` expired sessions (those never presented again); the count."""
    expired = select(DashboardSession.token_hash).where(
        col(DashboardSession.expires_at) <= utcnow()
    )
    hashes = list(session.exec(expired.limit(batch)))
    if hashes:
        session.execute(
            sa.delete(DashboardSession).where(col(DashboardSession.token_hash).in_(hashes))
        )
    return len(hashes)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
