"""The delivery pump: claim due deliveries in batches, send them concurrently, record the
attempts in batches.

One ``webhooks.deliver_due`` task runs one pump. It loops until nothing is due (or its
``pump_seconds`` are up, when it hands over to a fresh wake-up):

1. **claim** (one transaction): ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED
   LIMIT k) RETURNING``, which leases up to k due deliveries to this run's token for the
   whole attempt's time budget, then reads their endpoints (URL, secrets) in one query.
   Two pumps never hold the same row: the lease is a compare-and-set, and locked rows are
   skipped, not waited for. A delivery whose endpoint was disabled is marked ``skipped``.
2. **send**: ``Sender`` runs the requests on a thread pool, at most
   ``max_in_flight_per_endpoint`` at once per endpoint; claims leave out endpoints at
   their cap, so a dead endpoint's timeouts never hold back the others.
3. **record** (one transaction per group of finished sends): every attempt row, the
   deliveries' outcomes and retry times, the endpoints' failure clocks (and disabling).
   A send whose lease was taken meanwhile is recorded as an attempt only.

Per-object order holds as before: ``delivery._due`` leaves out a delivery while an older
one about the same object is pending for the same endpoint (leased ones included), so the
next in line is claimed by the loop's next claim after the first one is recorded.

At most ``pumps`` run at once (a Postgres advisory lock per slot, released with the
connection if the worker dies); a wake-up that finds every slot taken ends at once, and a
pump checks for due work after giving its slot back, so no wake-up is lost in between.
Whatever a killed pump held comes back when its leases lapse (the sweeper wakes a pump),
and is sent again with the same webhook-id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog
from sqlmodel import Session, col, select

from service import ids
from service.config import get_settings
from service.db import get_engine, session_scope, utcnow
from service.webhooks import delivery, http, schedule
from service.webhooks.models import (
    AttemptTrigger,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from service.webhooks.sender import Outcome, Send, Sender
from service.webhooks.settings import WebhookSettings
from service.webhooks.ssrf import Resolver

log = structlog.get_logger(__name__)

# How often a pump with nothing more to claim looks again while its sends are in flight
# (work committed meanwhile whose own wake-up found every slot taken).
POLL_SECONDS = 0.25
# Advisory-lock namespace of the pump slots ("whkp"); the second key is the slot number.
_SLOT_NAMESPACE = 0x77686B70
# Postgres: deadlock detected, serialization failure. Recording is retried on these.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
_RECORD_TRIES = 3
_ERROR_CHARS = 256


@dataclass
class Claimed:
    sends: list[Send] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # endpoint disabled: marked skipped

    def __len__(self) -> int:
        return len(self.sends) + len(self.skipped)


def _send_lease_seconds(settings: WebhookSettings) -> float:
    # Covers the attempt's whole time budget plus the claim's slack, so a send that starts
    # in time never outlives its lease.
    return settings.timeout_seconds + get_settings().lease_seconds


def claim(
    session: Session,
    token: str,
    limit: int,
    *,
    skip_endpoints: list[str] | None = None,
    where: tuple[sa.ColumnElement[bool], ...] = (),
) -> Claimed:
    """Lease up to ``limit`` due deliveries to ``token`` in one statement, with what it
    takes to send them. Deliveries of ``skip_endpoints`` are left for later."""
    settings = get_settings().webhooks
    now = utcnow()
    started = time.monotonic()
    conditions = [delivery._due(now), *where]
    if skip_endpoints:
        conditions.append(col(WebhookDelivery.endpoint_id).not_in(skip_endpoints))
    due = (
        sa.select(col(WebhookDelivery.id))
        .where(*conditions)
        .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.pk))
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)  # type: ignore[arg-type]
    )
    rows = session.execute(
        sa.update(WebhookDelivery)
        .where(
            col(WebhookDelivery.id).in_(due.scalar_subquery()),
            col(WebhookDelivery.status) == DeliveryStatus.pending,
            delivery._not_leased(now),
        )
        .values(
            lease_owner=token,
            lease_expires_at=now + dt.timedelta(seconds=_send_lease_seconds(settings)),
        )
        .returning(
            col(WebhookDelivery.id),
            col(WebhookDelivery.endpoint_id),
            col(WebhookDelivery.msg_id),
            col(WebhookDelivery.payload),
            col(WebhookDelivery.pk),
        )
        .execution_options(synchronize_session=False)
    ).all()
    claimed = Claimed()
    if not rows:
        return claimed
    endpoints = {
        endpoint.id: endpoint
        for endpoint in session.exec(
            select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_({r[1] for r in rows}))
        )
    }
    secrets: dict[str, tuple[str, ...]] = {}
    # A send must start while its lease still covers a whole attempt after it; half the
    # slack leaves room for the recording that follows.
    not_after = started + get_settings().lease_seconds / 2
    for delivery_id, endpoint_id, msg_id, payload, _pk in sorted(rows, key=lambda r: r[4]):
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None or not endpoint.enabled:
            claimed.skipped.append(delivery_id)
            continue
        if endpoint_id not in secrets:
            secrets[endpoint_id] = tuple(delivery.active_secrets(endpoint, now))
        claimed.sends.append(
            Send(
                delivery_id=delivery_id,
                endpoint_id=endpoint_id,
                url=endpoint.url,
                msg_id=msg_id,
                body=payload.encode("utf-8"),
                secrets=secrets[endpoint_id],
                not_after=not_after,
            )
        )
    if claimed.skipped:
        session.execute(
            sa.update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id).in_(claimed.skipped),
                col(WebhookDelivery.lease_owner) == token,
            )
            .values(
                status=DeliveryStatus.skipped,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    return claimed


def _error_text(result: http.DeliveryResult) -> str | None:
    if result.error is None and not result.ok and result.status_code is not None:
        return f"HTTP {result.status_code}"
    return (result.error or "")[:_ERROR_CHARS] or None


def _schedule_retry(
    row: WebhookDelivery, result: http.DeliveryResult, now: dt.datetime, settings: WebhookSettings
) -> str:
    if row.trigger == AttemptTrigger.manual:
        row.status = DeliveryStatus.failed  # a manual send is one attempt
        return "failed"
    row.attempts += 1
    delay = schedule.next_attempt_delay(
        row.attempts + 1,
        settings,
        retry_after=result.retry_after_seconds,
        overloaded=result.status_code == 429 or result.error == "timeout",
    )
    if delay is None:
        row.status = DeliveryStatus.failed
        row.next_attempt_at = None
        return "failed"
    row.next_attempt_at = now + dt.timedelta(seconds=delay)
    return "retry_scheduled"


def _record_once(token: str, outcomes: list[Outcome]) -> list[str]:
    now = utcnow()
    sent = [(send, result) for send, result in outcomes if result is not None]
    unsent = [send.delivery_id for send, result in outcomes if result is None]
    results: list[str] = []
    with session_scope() as session:
        if unsent:
            # Never started (their lease would not have covered the attempt): handed back
            # untouched, due as before, for whichever pump claims them next.
            session.execute(
                sa.update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id).in_(unsent),
                    col(WebhookDelivery.lease_owner) == token,
                )
                .values(lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            results += ["released"] * len(unsent)
        if not sent:
            return results
        # Rows, then endpoints, each in primary-key order: two recording pumps lock in the
        # same order and cannot deadlock each other.
        rows = {
            row.id: row
            for row in session.exec(
                select(WebhookDelivery)
                .where(col(WebhookDelivery.id).in_([s.delivery_id for s, _ in sent]))
                .order_by(col(WebhookDelivery.pk))
                .with_for_update()
            )
        }
        endpoints = {
            endpoint.id: endpoint
            for endpoint in session.exec(
                select(WebhookEndpoint)
                .where(col(WebhookEndpoint.id).in_({s.endpoint_id for s, _ in sent}))
                .order_by(col(WebhookEndpoint.pk))
                .with_for_update()
            )
        }
        for send, result in sent:
            row = rows.get(send.delivery_id)
            if row is None:
                results.append("deleted")  # its endpoint was deleted while we were sending
                continue
            results.append(_apply(session, row, endpoints[row.endpoint_id], token, result, now))
    return results


def _apply(
    session: Session,
    row: WebhookDelivery,
    endpoint: WebhookEndpoint,
    token: str,
    result: http.DeliveryResult,
    now: dt.datetime,
) -> str:
    """Write one finished attempt and decide what comes next; returns the outcome."""
    settings = get_settings().webhooks
    row.total_attempts += 1
    session.add(
        WebhookAttempt(
            id=ids.new_id("whatt_"),
            team_id=row.team_id,
            endpoint_id=row.endpoint_id,
            delivery_id=row.id,
            attempt_number=row.total_attempts,
            trigger=row.trigger,
            status_code=result.status_code,
            ok=result.ok,
            latency_ms=result.latency_ms,
            response_body=result.response_body[: settings.max_response_body_bytes],
            error=(result.error or "")[:_ERROR_CHARS] or None,
            connected_ip=result.connected_ip,
        )
    )
    log.info(
        "webhook_attempt",
        delivery_id=row.id,
        endpoint_id=row.endpoint_id,
        status_code=result.status_code,
        ok=result.ok,
        error=result.error,
        latency_ms=round(result.latency_ms, 1),
    )
    row.last_status_code = result.status_code
    row.last_error = _error_text(result)
    row.updated_at = now
    session.add(row)
    if row.lease_owner != token:
        # The lease was taken meanwhile (the endpoint was disabled, or it lapsed and another
        # pump claimed the row): the attempt is on record, the outcome is not ours to decide.
        return "lease_lost"
    row.lease_owner = row.lease_expires_at = None
    if result.ok:
        row.status = DeliveryStatus.succeeded
        row.delivered_at = now
        if endpoint.failing_since is not None:
            endpoint.failing_since = None
            session.add(endpoint)
        return "succeeded"

    outcome = _schedule_retry(row, result, now, settings)
    endpoint.failing_since = endpoint.failing_since or now
    session.add(endpoint)
    if endpoint.enabled and result.gone:
        row.status, outcome = DeliveryStatus.failed, "failed"
        session.flush()
        delivery.disable_endpoint(session, endpoint, "The endpoint answered 410 Gone.")
    elif endpoint.enabled and (now - endpoint.failing_since).total_seconds() >= (
        settings.disable_after_seconds
    ):
        row.status, outcome = DeliveryStatus.failed, "failed"
        session.flush()
        delivery.disable_endpoint(
            session,
            endpoint,
            "Every attempt has failed since "
            f"{endpoint.failing_since.isoformat(timespec='seconds')}.",
        )
    return outcome


def record(token: str, outcomes: list[Outcome]) -> list[str]:
    """Record a group of finished sends in one transaction; returns each one's outcome."""
    for attempt in range(_RECORD_TRIES):
        try:
            return _record_once(token, outcomes)
        except sa.exc.OperationalError as exc:
            # Disabling an endpoint locks its pending rows after the endpoint, the opposite
            # order to recording; the database breaks such a deadlock by failing one side.
            state = getattr(exc.orig, "sqlstate", None)
            if state not in _RETRYABLE_SQLSTATES or attempt == _RECORD_TRIES - 1:
                raise
            log.warning("webhook_record_retried", sqlstate=state)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def slot(count: int) -> Iterator[bool]:
    """Hold one of ``count`` pump slots for the block; yields False when all are taken.

    Session-level advisory locks on a connection of their own: a worker that dies drops the
    connection, and Postgres frees its slot. SQLite has a single writer anyway: no limit."""
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        yield True
        return
    conn = engine.connect()
    held: int | None = None
    try:
        for number in range(count):
            if conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:ns, :slot)"),
                {"ns": _SLOT_NAMESPACE, "slot": number},
            ).scalar():
                held = number
                break
        conn.commit()
        yield held is not None
    finally:
        try:
            if held is not None:
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:ns, :slot)"),
                    {"ns": _SLOT_NAMESPACE, "slot": held},
                )
                conn.commit()
        except Exception:
            # Unlock failed: drop the connection rather than pool it with the lock held.
            conn.invalidate()
        conn.close()


def run(
    *,
    resolver: Resolver | None = None,
    seconds: float | None = None,
    where: tuple[sa.ColumnElement[bool], ...] = (),
) -> list[str]:
    """Deliver what is due until nothing is (or ``seconds`` pass); one outcome per
    delivery handled. ``where`` narrows what is claimed (tests)."""
    settings = get_settings().webhooks
    with slot(settings.pumps) as held:
        if not held:
            return []
        outcomes = _pump(settings, resolver, seconds or settings.pump_seconds, where)
    # Work committed while we held the slot may have had its wake-up turned away; whatever
    # is still due gets a fresh pump (also when we stopped because our time was up).
    if delivery.due_count(limit=1):
        delivery.wake_now(1)
    return outcomes


def _pump(
    settings: WebhookSettings,
    resolver: Resolver | None,
    seconds: float,
    where: tuple[sa.ColumnElement[bool], ...],
) -> list[str]:
    token = f"pump:{delivery.default_owner_prefix()}:{ids.random_base62(12)}"
    sender = Sender(
        settings,
        threads=settings.pump_threads,
        per_endpoint=settings.max_in_flight_per_endpoint,
        resolver=resolver,
    )
    batch = max(1, min(settings.claim_batch, 2 * settings.pump_threads))
    refill_at = max(1, math.ceil(batch / 2))
    stop_at = time.monotonic() + seconds
    next_claim = 0.0
    outcomes: list[str] = []
    try:
        while True:
            now = time.monotonic()
            open_ = now < stop_at
            if open_ and (sender.idle() or (now >= next_claim and sender.room() >= refill_at)):
                limit = max(1, min(batch, sender.room()))
                with session_scope() as session:
                    claimed = claim(
                        session, token, limit, skip_endpoints=sender.saturated(), where=where
                    )
                outcomes += ["skipped"] * len(claimed.skipped)
                for send in claimed.sends:
                    sender.submit(send)
                if len(claimed) < limit:
                    next_claim = now + POLL_SECONDS  # nothing more due right now
                if len(claimed) == 0 and sender.idle():
                    break
            elif not open_:
                held_back = sender.cancel_waiting()
                if held_back:
                    outcomes += record(token, held_back)
                if sender.idle():
                    break
            if sender.idle():
                continue  # everything claimed was skipped: claim again
            can_claim = open_ and now >= next_claim and sender.room() >= refill_at
            finished = sender.collect(timeout=0.0 if can_claim else POLL_SECONDS)
            if finished:
                outcomes += record(token, finished)
    finally:
        sender.close()
    if outcomes:
        log.info("webhook_pump", handled=len(outcomes), token=token)
    return outcomes
