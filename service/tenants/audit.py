"""The audit log: one append-only row per mutation, written in the action's own transaction.

Who and from where come from the request context, not from parameters: the API's auth
dependency sets the acting key (``set_actor``) and the request middleware binds
``request_id`` and ``client_ip`` into structlog's contextvars. Service functions therefore
need only ``audit.record(session, None, action, target_type, target_id, details)``.
Details must never hold secrets; they are redacted like log lines as a second guard.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlmodel import Session, col, select

from service import ids
from service.logging import redact_value
from service.pagination import keyset_page
from service.tenants.keys import DISPLAY_LENGTH
from service.tenants.models import AuditEvent

_PREFIX_FIELDS = ("prefix", "key_prefix")


class Actor(Protocol):
    @property
    def team_id(self) -> str: ...

    @property
    def key_id(self) -> str: ...


_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("ftq_actor", default=None)


def set_actor(actor: Actor | None) -> None:
    """Mark ``actor`` as the caller of the current request (set by the auth dependency)."""
    _actor.set(actor)


def current_actor() -> Actor | None:
    return _actor.get()


def request_context() -> tuple[str | None, str | None]:
    """(request_id, client_ip) of the current request, if any."""
    context = structlog.contextvars.get_contextvars()
    return context.get("request_id"), context.get("client_ip")


def record(
    session: Session,
    actor: Actor | None,
    action: str,
    target_type: str,
    target_id: str | None,
    details: dict[str, Any] | None = None,
    *,
    team_id: str | None = None,
) -> AuditEvent:
    """Append one event; ``actor=None`` means the caller of the current request (or nobody)."""
    actor = actor or current_actor()
    request_id, ip = request_context()
    event = AuditEvent(
        id=ids.new_id("audit_"),
        team_id=team_id or (actor.team_id if actor else None),
        actor_key_id=actor.key_id if actor else None,
        action=action,
        target_type=target_type,
        target_id=target_id,
        request_id=request_id,
        ip=ip,
        details=_redact(details) if details else None,
    )
    session.add(event)
    return event


def _redact(details: dict[str, Any]) -> dict[str, Any]:
    # A key's display prefix (ftq_sk_ + 6 characters) identifies it without unlocking it, so
    # it survives; everything else goes through the same redaction as log lines.
    kept = {
        name: value
        for name, value in details.items()
        if name in _PREFIX_FIELDS and isinstance(value, str) and len(value) == DISPLAY_LENGTH
    }
    return {**redact_value(details), **kept}


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    actor_key_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def list_events(
    session: Session,
    team_id: str,
    filters: AuditFilter,
    *,
    after: str | None = None,
    limit: int = 20,
) -> tuple[list[AuditEvent], bool]:
    """The team's events, newest first; ``after`` is the id of the last event already seen."""
    query = select(AuditEvent).where(AuditEvent.team_id == team_id)
    if filters.action:
        # "file.*" matches every file action.
        if filters.action.endswith("*"):
            query = query.where(AuditEvent.action.startswith(filters.action[:-1]))  # type: ignore[attr-defined]
        else:
            query = query.where(AuditEvent.action == filters.action)
    if filters.target_type:
        query = query.where(AuditEvent.target_type == filters.target_type)
    if filters.target_id:
        query = query.where(AuditEvent.target_id == filters.target_id)
    if filters.actor_key_id:
        query = query.where(AuditEvent.actor_key_id == filters.actor_key_id)
    if filters.since:
        query = query.where(AuditEvent.created_at >= filters.since)
    if filters.until:
        query = query.where(AuditEvent.created_at < filters.until)
    scope = [col(AuditEvent.team_id) == team_id]
    return keyset_page(
        session,
        query,
        after=after,
        limit=limit,
        id_column=col(AuditEvent.id),
        order=(col(AuditEvent.pk),),
        scope=scope,
    )


def event_object(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "audit_event",
        "created_at": int(event.created_at.timestamp()),
        "team_id": event.team_id,
        "actor_key_id": event.actor_key_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": event.request_id,
        "ip": event.ip,
        "details": event.details,
    }
