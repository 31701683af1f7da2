"""Getting outbox events to webhook endpoints: fan-out, the due-delivery sweeper, one send.

* ``fanout`` turns undispatched outbox rows into one ``webhook_deliveries`` row per
  matching enabled endpoint and marks the outbox row dispatched, in one transaction.
* ``claim_due`` (called by the sweeper, by fan-out and after each send) leases due
  deliveries with ``SELECT … FOR UPDATE SKIP LOCKED`` plus a compare-and-set on the lease
  columns, and enqueues ``webhooks.deliver(delivery_id, owner)`` after commit.
* ``deliver`` swaps the sweeper's lease for its own (so a duplicated message sends at
  most once), commits, sends, then records the attempt and the next step.

Retries wait in ``next_attempt_at``, never in a broker countdown: whatever a dead worker or
a flushed Redis drops is found again by the sweeper once its lease lapses.
"""

from __future__ import annotations

import datetime as dt
import socket

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from service import ids, leases
from service.config import get_settings
from service.crypto import decrypt
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.webhooks import events, http, schedule
from service.webhooks.models import (
    AttemptTrigger,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointNotice,
    endpoint_object,
)
from service.webhooks.outbox import OutboxEvent, record_event
from service.webhooks.signing import build_headers
from service.webhooks.ssrf import Resolver

log = structlog.get_logger(__name__)

FANOUT_BATCH = 200
SWEEP_BATCH = 200
# Best-effort order: a delivery waits while an older one about the same object is still
# pending for the same endpoint, but never longer than this after that one was created
# (Polar's FIFO guard caps the wait at a minute too), so one failing event cannot hold
# back the rest for days.
ORDER_GUARD_SECONDS = 60.0
_ERROR_CHARS = 256


def _owner(prefix: str) -> str:
    return f"{prefix[:60]}:{ids.random_base62(10)}"


def default_owner_prefix() -> str:
    return f"wh:{socket.gethostname()[:40]}"


def _claim_seconds() -> float:
    return get_settings().lease_seconds


def _send_lease_seconds() -> float:
    # Outlives the attempt's whole time budget, so a healthy send never loses its lease.
    settings = get_settings()
    return settings.webhooks.timeout_seconds + settings.lease_seconds


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


def claim_due(
    session: Session,
    *where: sa.ColumnElement[bool],
    owner_prefix: str | None = None,
    limit: int = SWEEP_BATCH,
) -> list[str]:
    """Lease due deliveries (optionally narrowed by ``where``) and enqueue one send each.

    Runs inside the caller's transaction; the messages go out after it commits.
    """
    now = utcnow()
    # One owner for the batch: each send swaps it for a token of its own (``_take_over``),
    # so sharing it costs nothing, and the whole batch is leased in one statement.
    owner = _owner(owner_prefix or default_owner_prefix())
    due = (
        sa.select(col(WebhookDelivery.id))
        .where(_due(now), *where)
        .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.pk))
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)  # type: ignore[arg-type]
    )
    claimed = list(
        session.execute(
            sa.update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id).in_(due.scalar_subquery()),
                col(WebhookDelivery.status) == DeliveryStatus.pending,
                _not_leased(now),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=_claim_seconds()),
            )
            .returning(col(WebhookDelivery.id))
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    for delivery_id in claimed:
        enqueue("webhooks.deliver", delivery_id, owner)
    return claimed


def sweep(owner_prefix: str | None = None) -> list[str]:
    """Claim every due delivery (a lost message, a retry whose time has come)."""
    with session_scope() as session:
        return claim_due(session, owner_prefix=owner_prefix)


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return not endpoint.event_types or event_type in endpoint.event_types


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
        id=ids.new_id("whdel_"),
        msg_id=ids.new_id("msg_"),
        team_id=endpoint.team_id,
        endpoint_id=endpoint.id,
        outbox_event_id=outbox_event_id,
        event_type=event_type,
        object_id=object_id,
        sequence=sequence,
        payload=payload.decode("utf-8"),
        trigger=trigger,
        next_attempt_at=utcnow(),
    )


def fanout(owner_prefix: str | None = None) -> int:
    """Turn a batch of undispatched outbox rows into deliveries; returns how many were made."""
    now = utcnow()
    created = 0
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
            for endpoint in targets:
                session.add(
                    new_delivery(
                        endpoint,
                        event_type=event.event_type,
                        object_id=event.object_id,
                        sequence=event.sequence,
                        payload=payload,
                        outbox_event_id=event.id,
                    )
                )
                created += 1
        session.flush()
        if created:
            # The immediate attempt: no need to wait for the next sweep.
            claim_due(
                session,
                col(WebhookDelivery.outbox_event_id).in_([e.id for e in batch]),
                owner_prefix=owner_prefix,
            )
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


def _take_over(session: Session, delivery_id: str, owner: str | None) -> str | None:
    """Swap the sweeper's lease for one only this run holds; None if not ours to send."""
    now = utcnow()
    token = f"send:{ids.random_base62(16)}"
    taken = leases.claim(
        session,
        WebhookDelivery,
        delivery_id,
        token,
        _send_lease_seconds(),
        where=(
            col(WebhookDelivery.status) == DeliveryStatus.pending,
            col(WebhookDelivery.next_attempt_at) <= now,
        ),
        steal_from=owner,
    )
    return token if taken else None


def _get(session: Session, delivery_id: str, *, lock: bool = False) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def deliver(delivery_id: str, owner: str | None = None, *, resolver: Resolver | None = None) -> str:
    """Make one attempt at ``delivery_id`` under ``owner``'s lease; returns what happened."""
    bound = log.bind(delivery_id=delivery_id)
    now = utcnow()
    # Taking the lease and reading what to send share one transaction (one round of
    # commits fewer per delivery); the lease is committed before any byte goes out.
    with session_scope() as session:
        token = _take_over(session, delivery_id, owner)
        if token is None:
            return "not_ours"
        delivery = _get(session, delivery_id)
        if delivery is None or delivery.lease_owner != token:
            return "not_ours"
        endpoint = session.exec(
            select(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id)
        ).first()
        if endpoint is None or not endpoint.enabled:
            delivery.status = DeliveryStatus.skipped
            delivery.lease_owner = delivery.lease_expires_at = None
            delivery.updated_at = now
            session.add(delivery)
            return "skipped"
        url, msg_id = endpoint.url, delivery.msg_id
        body = delivery.payload.encode("utf-8")
        secrets = active_secrets(endpoint, now)

    settings = get_settings().webhooks
    result = http.deliver(
        url, build_headers(secrets, msg_id, body), body, settings, resolver=resolver
    )
    bound.info(
        "webhook_attempt",
        endpoint_id=endpoint.id,
        status_code=result.status_code,
        ok=result.ok,
        error=result.error,
        latency_ms=round(result.latency_ms, 1),
    )
    return _record(delivery_id, token, result)


def _record(delivery_id: str, token: str, result: http.DeliveryResult) -> str:
    settings = get_settings().webhooks
    now = utcnow()
    with session_scope() as session:
        delivery = _get(session, delivery_id, lock=True)
        if delivery is None:
            return "deleted"  # its endpoint was deleted while we were sending
        endpoint = session.exec(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id == delivery.endpoint_id)
            .with_for_update()
        ).one()
        delivery.total_attempts += 1
        session.add(
            WebhookAttempt(
                id=ids.new_id("whatt_"),
                team_id=delivery.team_id,
                endpoint_id=delivery.endpoint_id,
                delivery_id=delivery.id,
                attempt_number=delivery.total_attempts,
                trigger=delivery.trigger,
                status_code=result.status_code,
                ok=result.ok,
                latency_ms=result.latency_ms,
                response_body=result.response_body[: settings.max_response_body_bytes],
                error=(result.error or "")[:_ERROR_CHARS] or None,
                connected_ip=result.connected_ip,
            )
        )
        delivery.last_status_code = result.status_code
        delivery.last_error = (result.error or "")[:_ERROR_CHARS] or None
        if result.error is None and not result.ok and result.status_code is not None:
            delivery.last_error = f"HTTP {result.status_code}"
        delivery.updated_at = now
        session.add(delivery)
        if delivery.lease_owner != token:
            # Our lease lapsed mid-send and another run owns the delivery now: the attempt
            # is on record, the outcome is theirs to decide.
            return "lease_lost"
        delivery.lease_owner = delivery.lease_expires_at = None

        if result.ok:
            outcome = "succeeded"
            delivery.status = DeliveryStatus.succeeded
            delivery.delivered_at = now
            endpoint.failing_since = None
        else:
            outcome = _schedule_retry(delivery, result, now)
            endpoint.failing_since = endpoint.failing_since or now
            if endpoint.enabled and result.gone:
                delivery.status, outcome = DeliveryStatus.failed, "failed"
                session.flush()
                disable_endpoint(session, endpoint, "The endpoint answered 410 Gone.")
            elif endpoint.enabled and (now - endpoint.failing_since).total_seconds() >= (
                settings.disable_after_seconds
            ):
                delivery.status, outcome = DeliveryStatus.failed, "failed"
                session.flush()
                disable_endpoint(
                    session,
                    endpoint,
                    "Every attempt has failed since "
                    f"{endpoint.failing_since.isoformat(timespec='seconds')}.",
                )
        session.add(endpoint)
        session.flush()
        if endpoint.enabled and _others_pending(session, delivery):
            # Whatever waited behind this delivery (same object, same endpoint) goes now.
            claim_due(
                session,
                col(WebhookDelivery.endpoint_id) == delivery.endpoint_id,
                col(WebhookDelivery.object_id) == delivery.object_id,
            )
        return outcome


def _others_pending(session: Session, delivery: WebhookDelivery) -> bool:
    """Whether another delivery about the same object waits for the same endpoint: one
    index lookup, so the usual case (nothing waits) skips the claim query."""
    return (
        session.execute(
            sa.select(sa.literal(1))
            .where(
                col(WebhookDelivery.endpoint_id) == delivery.endpoint_id,
                col(WebhookDelivery.object_id) == delivery.object_id,
                col(WebhookDelivery.status) == DeliveryStatus.pending,
                col(WebhookDelivery.id) != delivery.id,
            )
            .limit(1)
        ).first()
        is not None
    )


def _schedule_retry(
    delivery: WebhookDelivery, result: http.DeliveryResult, now: dt.datetime
) -> str:
    if delivery.trigger == AttemptTrigger.manual:
        delivery.status = DeliveryStatus.failed  # a manual send is one attempt
        return "failed"
    delivery.attempts += 1
    delay = schedule.next_attempt_delay(
        delivery.attempts + 1,
        get_settings().webhooks,
        retry_after=result.retry_after_seconds,
        overloaded=result.status_code == 429 or result.error == "timeout",
    )
    if delay is None:
        delivery.status = DeliveryStatus.failed
        delivery.next_attempt_at = None
        return "failed"
    delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
    return "retry_scheduled"
