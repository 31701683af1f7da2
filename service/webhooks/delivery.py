"""Getting outbox events to webhook endpoints: fan-out, what is due, wake-ups, disabling.

* ``fanout`` turns undispatched outbox rows into one ``webhook_deliveries`` row per
  matching enabled endpoint and marks the outbox row dispatched, in one transaction, then
  wakes a delivery pump (``service.webhooks.pump``) after the commit.
* ``_due`` says which deliveries may go now: pending, due, unleased, and not behind an
  older pending delivery about the same object to the same endpoint (best-effort order).
* ``sweep`` (on beat) wakes pumps for whatever is due: a retry whose time has come, work
  whose wake-up was lost, a lease that lapsed when a worker died.

Retries wait in ``next_attempt_at``, never in a broker countdown, and a wake-up carries no
ids: whatever a dead worker or a flushed Redis drops is found again in the table.
"""

from __future__ import annotations

import datetime as dt
import math
import socket
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from service import ids, leases
from service.config import get_settings
from service.crypto import decrypt
from service.db import session_scope, utcnow
from service.dispatch import enqueue, publish_now
from service.webhooks import events
from service.webhooks.models import (
    AttemptTrigger,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointNotice,
    endpoint_object,
)
from service.webhooks.outbox import OutboxEvent, record_event

log = structlog.get_logger(__name__)

FANOUT_BATCH = 200
DELIVER_TASK = "webhooks.deliver_due"
# Best-effort order: a delivery waits while an older one about the same object is still
# pending for the same endpoint, but never longer than this after that one was created
# (Polar's FIFO guard caps the wait at a minute too), so one failing event cannot hold
# back the rest for days.
ORDER_GUARD_SECONDS = 60.0
_ERROR_CHARS = 256


def default_owner_prefix() -> str:
    return f"wh:{socket.gethostname()[:40]}"


def _not_leased(now: dt.datetime) -> sa.ColumnElement[bool]:
    return leases.not_leased(WebhookDelivery, now)


def _due(now: dt.datetime) -> sa.ColumnElement[bool]:
    earlier = aliased(WebhookDelivery)
    blocked = (
        sa.select(col(earlier.pk))
        .where(
            col(earlier.endpoint_id) == col(WebhookDelivery.endpoint_id),
            col(earlier.object_id) == col(WebhookDelivery.object_id),
            col(earlier.status) == DeliveryStatus.pending,
            col(earlier.sequence) < col(WebhookDelivery.sequence),
            col(earlier.created_at) > now - dt.timedelta(seconds=ORDER_GUARD_SECONDS),
        )
        .exists()
    )
    return sa.and_(
        col(WebhookDelivery.status) == DeliveryStatus.pending,
        col(WebhookDelivery.next_attempt_at) <= now,
        _not_leased(now),
        ~blocked,
    )


def due_count(limit: int) -> int:
    """How many deliveries are due and unleased right now, counting at most ``limit``."""
    with session_scope() as session:
        due = sa.select(sa.literal(1)).where(_due(utcnow())).limit(limit).subquery()
        return int(session.execute(sa.select(sa.func.count()).select_from(due)).scalar_one())


def _wakeups(count: int) -> int:
    settings = get_settings().webhooks
    return min(settings.pumps, math.ceil(count / settings.claim_batch)) if count > 0 else 0


def wake(count: int = 1) -> None:
    """Start pumps for ``count`` due deliveries once the current transaction commits: one
    per claim batch, at most as many as may run at once (the extra ones would find every
    slot taken). The rows, not the messages, are the work: a lost wake-up costs a delay."""
    for _ in range(_wakeups(count)):
        enqueue(DELIVER_TASK)


def wake_now(count: int = 1) -> None:
    """``wake`` outside any transaction: publish at once."""
    for _ in range(_wakeups(count)):
        publish_now(DELIVER_TASK)


def sweep() -> int:
    """Wake pumps for whatever is due (a lost wake-up, a retry whose time has come)."""
    settings = get_settings().webhooks
    due = due_count(limit=settings.pumps * settings.claim_batch)
    wake_now(due)
    return due


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return not endpoint.event_types or event_type in endpoint.event_types


def _delivery_row(
    endpoint: WebhookEndpoint,
    *,
    event_type: str,
    object_id: str,
    sequence: int,
    payload: bytes,
    outbox_event_id: str | None,
    trigger: AttemptTrigger,
    now: dt.datetime,
) -> dict[str, Any]:
    return {
        "id": ids.new_id("whdel_"),
        "msg_id": ids.new_id("msg_"),
        "team_id": endpoint.team_id,
        "endpoint_id": endpoint.id,
        "outbox_event_id": outbox_event_id,
        "event_type": event_type,
        "object_id": object_id,
        "sequence": sequence,
        "payload": payload.decode("utf-8"),
        "status": DeliveryStatus.pending,
        "trigger": trigger,
        "attempts": 0,
        "total_attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def new_delivery(
    endpoint: WebhookEndpoint,
    *,
    event_type: str,
    object_id: str,
    sequence: int,
    payload: bytes,
    outbox_event_id: str | None,
    trigger: AttemptTrigger = AttemptTrigger.scheduled,
) -> WebhookDelivery:
    return WebhookDelivery(
        **_delivery_row(
            endpoint,
            event_type=event_type,
            object_id=object_id,
            sequence=sequence,
            payload=payload,
            outbox_event_id=outbox_event_id,
            trigger=trigger,
            now=utcnow(),
        )
    )


def fanout() -> int:
    """Turn a batch of undispatched outbox rows into deliveries; returns how many were made."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    with session_scope() as session:
        batch = session.exec(
            select(OutboxEvent)
            .where(col(OutboxEvent.dispatched_at).is_(None))
            .order_by(col(OutboxEvent.pk))
            .limit(FANOUT_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if not batch:
            return 0
        endpoints: dict[str, list[WebhookEndpoint]] = {}
        for endpoint in session.exec(
            select(WebhookEndpoint).where(
                col(WebhookEndpoint.team_id).in_({e.team_id for e in batch}),
                WebhookEndpoint.enabled == True,  # noqa: E712
            )
        ):
            endpoints.setdefault(endpoint.team_id, []).append(endpoint)
        # Normally empty (dispatching is atomic with the inserts); guards a re-run anyway.
        existing = set(
            session.exec(
                select(WebhookDelivery.outbox_event_id, WebhookDelivery.endpoint_id).where(
                    col(WebhookDelivery.outbox_event_id).in_([e.id for e in batch])
                )
            ).all()
        )
        for event in batch:
            event.dispatched_at = now
            session.add(event)
            targets = [
                endpoint
                for endpoint in endpoints.get(event.team_id, [])
                if subscribed(endpoint, event.event_type)
                and (event.id, endpoint.id) not in existing
                # The notice that an endpoint was disabled goes to the team's *other*
                # endpoints, even when this one was re-enabled before the fan-out ran.
                and not (
                    event.event_type == events.ENDPOINT_DISABLED and event.object_id == endpoint.id
                )
            ]
            if not targets:
                continue
            try:
                payload = events.build_payload(
                    event.id,
                    event.event_type,
                    int(event.created_at.timestamp()),
                    event.payload,
                    event.sequence,
                )
            except ValueError as exc:
                # Not deliverable as written; retrying cannot fix it.
                log.error("webhook_event_unbuildable", event_id=event.id, error=str(exc))
                continue
            rows += [
                _delivery_row(
                    endpoint,
                    event_type=event.event_type,
                    object_id=event.object_id,
                    sequence=event.sequence,
                    payload=payload,
                    outbox_event_id=event.id,
                    trigger=AttemptTrigger.scheduled,
                    now=now,
                )
                for endpoint in targets
            ]
        if rows:
            # One multi-row insert: an ORM object per delivery cost more than the send.
            session.execute(sa.insert(WebhookDelivery.__table__), rows)  # type: ignore[attr-defined]
        created = len(rows)
        if created:
            # The immediate attempt: no need to wait for the next sweep.
            wake(created)
    if created:
        log.info("webhook_fanout", events=len(batch), deliveries=created)
    return created


def active_secrets(endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    """Every secret that signs right now: the current one, plus the previous during overlap."""
    secrets = [decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    ):
        secrets.append(decrypt(endpoint.previous_secret_encrypted))
    return secrets


def disable_endpoint(
    session: Session, endpoint: WebhookEndpoint, reason: str, *, kind: str = "disabled"
) -> None:
    """Disable ``endpoint``, skip its pending deliveries and tell the team (notice + event)."""
    now = utcnow()
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:_ERROR_CHARS]
    endpoint.disabled_at = now
    endpoint.updated_at = now
    endpoint.sequence += 1
    session.add(endpoint)
    session.execute(
        sa.update(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint.id,
            col(WebhookDelivery.status) == DeliveryStatus.pending,
        )
        .values(status=DeliveryStatus.skipped, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session="fetch")
    )
    session.add(
        WebhookEndpointNotice(
            id=ids.new_id("whnot_"),
            team_id=endpoint.team_id,
            endpoint_id=endpoint.id,
            kind=kind,
            reason=endpoint.disabled_reason,
        )
    )
    # Fanned out like any event, so the team's other enabled endpoints hear about it.
    record_event(
        session,
        team_id=endpoint.team_id,
        event_type=events.ENDPOINT_DISABLED,
        object_id=endpoint.id,
        sequence=endpoint.sequence,
        data=endpoint_object(endpoint),
    )
    log.warning("webhook_endpoint_disabled", endpoint_id=endpoint.id, reason=reason)
