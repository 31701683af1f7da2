"""The delivery pump: claim due deliveries in batches, send them concurrently, record the
attempts in batches.

One ``webhooks.deliver_due`` task runs one pump. It loops until nothing is due (or its
``pump_seconds`` are up, when it hands over to a fresh wake-up):

1. **claim**: ``WITH due AS MATERIALIZED (SELECT … FOR UPDATE SKIP LOCKED LIMIT k)
   UPDATE … FROM due … RETURNING``, which leases up to k due deliveries to this run's
   token for the whole attempt's time budget, then reads their endpoints (URL, secrets) in
   one query. Two pumps never hold the same row: locked rows are skipped, not waited for,
   and a locked row is re-checked against ``_due`` (unleased) on its latest version. A
   delivery whose endpoint was disabled is marked ``skipped``.
2. **send**: ``Sender`` runs the requests on a thread pool, at most
   ``max_in_flight_per_endpoint`` at once per endpoint; claims leave out endpoints at
   their cap, so a dead endpoint's timeouts never hold back the others.
3. **record** (a group of finished sends, in the same transaction as the next claim):
   every attempt row, the deliveries' outcomes and retry times, the endpoints' failure
   clocks (and disabling).
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
# How long a pump waits, after the first of a batch's sends finishes, for the rest of them
# before recording: a slow endpoint's send is recorded later, on its own.
LINGER_SECONDS = 0.05
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
    # Ordered by the due index alone, so the scan stops after ``limit`` rows instead of
    # sorting the whole backlog. MATERIALIZED: the locking select runs exactly once; as an
    # ``IN (subquery)`` the planner may rescan it and lease far more than ``limit`` rows.
    due = (
        sa.select(col(WebhookDelivery.id))
        .where(*conditions)
        .order_by(col(WebhookDelivery.next_attempt_at))
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)  # type: ignore[arg-type]
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    rows = session.execute(
        sa.update(WebhookDelivery)
        # Nothing more to check here: locking re-evaluated ``_due`` on each row's latest
        # version, and the lock keeps it so until this statement's commit.
        .where(col(WebhookDelivery.id) == due.c.id)
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
                failing=endpoint.failing_since is not None,
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


def _next_attempt(
    trigger: str, attempts: int, result: http.DeliveryResult, settings: WebhookSettings
) -> tuple[int, float | None]:
    """(attempts of the automatic run after this one, seconds until the next, or None)."""
    if trigger == AttemptTrigger.manual:
        return attempts, None  # a manual send is one attempt
    attempts += 1
    delay = schedule.next_attempt_delay(
        attempts + 1,
        settings,
        retry_after=result.retry_after_seconds,
        overloaded=result.status_code == 429 or result.error == "timeout",
    )
    return attempts, delay


_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]
_ATTEMPTS = WebhookAttempt.__table__  # type: ignore[attr-defined]
_ENDPOINTS = WebhookEndpoint.__table__  # type: ignore[attr-defined]


def _bulk_update(session: Session, keys: list[str], values: list[dict[str, object]]) -> None:
    """One UPDATE of ``keys`` per row (by ``_id``), sent as one batch (executemany)."""
    if values:
        statement = (
            _DELIVERIES.update()
            .where(_DELIVERIES.c.id == sa.bindparam("_id"))
            .values({key: sa.bindparam(key) for key in keys})
        )
        session.connection().execute(statement, values)


def _record(session: Session, token: str, outcomes: list[Outcome]) -> list[str]:
    """Core statements, a fixed number per group however large: the rows (locked), the
    attempts (one insert), the rows' new state (one batch), the endpoints' failure clocks;
    with an ORM object per attempt the recording cost more than the sends."""
    settings = get_settings().webhooks
    now = utcnow()
    sent = [(send, result) for send, result in outcomes if result is not None]
    unsent = [send.delivery_id for send, result in outcomes if result is None]
    results: list[str] = []
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
        for row in session.execute(
            sa.select(
                _DELIVERIES.c.id,
                _DELIVERIES.c.team_id,
                _DELIVERIES.c.endpoint_id,
                _DELIVERIES.c.trigger,
                _DELIVERIES.c.attempts,
                _DELIVERIES.c.total_attempts,
                _DELIVERIES.c.lease_owner,
            )
            .where(_DELIVERIES.c.id.in_([s.delivery_id for s, _ in sent]))
            .order_by(_DELIVERIES.c.pk)
            .with_for_update()
        )
    }
    failing_endpoints = sorted(
        {s.endpoint_id for s, r in sent if not r.ok and s.delivery_id in rows}
    )
    clocks: dict[str, dt.datetime | None] = {}  # endpoint -> failing_since
    enabled: dict[str, bool] = {}
    if failing_endpoints:
        for endpoint_id, failing_since, is_enabled in session.execute(
            sa.select(_ENDPOINTS.c.id, _ENDPOINTS.c.failing_since, _ENDPOINTS.c.enabled)
            .where(_ENDPOINTS.c.id.in_(failing_endpoints))
            .order_by(_ENDPOINTS.c.pk)
            .with_for_update()
        ):
            clocks[endpoint_id], enabled[endpoint_id] = failing_since, is_enabled

    attempts: list[dict[str, object]] = []
    finished: list[dict[str, object]] = []  # ours: outcome decided here
    noted: list[dict[str, object]] = []  # lease taken meanwhile: the attempt only
    disable: dict[str, str] = {}  # endpoint -> reason
    for send, result in sent:
        row = rows.get(send.delivery_id)
        if row is None:
            results.append("deleted")  # its endpoint was deleted while we were sending
            continue
        total = row.total_attempts + 1
        error = _error_text(result)
        attempts.append(
            {
                "id": ids.new_id("whatt_"),
                "team_id": row.team_id,
                "endpoint_id": row.endpoint_id,
                "delivery_id": row.id,
                "attempt_number": total,
                "trigger": row.trigger,
                "status_code": result.status_code,
                "ok": result.ok,
                "latency_ms": result.latency_ms,
                "response_body": result.response_body[: settings.max_response_body_bytes],
                "error": (result.error or "")[:_ERROR_CHARS] or None,
                "connected_ip": result.connected_ip,
                "created_at": now,
            }
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
        common = {
            "_id": row.id,
            "total_attempts": total,
            "last_status_code": result.status_code,
            "last_error": error,
            "updated_at": now,
        }
        if row.lease_owner != token:
            # The lease was taken meanwhile (the endpoint was disabled, or it lapsed and
            # another pump claimed the row): the attempt is on record, the outcome is
            # not ours to decide.
            noted.append(common)
            results.append("lease_lost")
            continue
        state = {
            **common,
            "lease_owner": None,
            "lease_expires_at": None,
            "attempts": row.attempts,
            "status": DeliveryStatus.pending,
            "next_attempt_at": None,
            "delivered_at": None,
        }
        if result.ok:
            state.update(status=DeliveryStatus.succeeded, delivered_at=now)
            if row.endpoint_id in clocks or send.failing:
                # Endpoints seen healthy at claim time are left alone: no write at all
                # in the usual case (a failure since then is cleared by the next success).
                clocks[row.endpoint_id] = None
            outcome = "succeeded"
        else:
            state["attempts"], delay = _next_attempt(row.trigger, row.attempts, result, settings)
            if delay is None:
                state["status"], outcome = DeliveryStatus.failed, "failed"
            else:
                state["next_attempt_at"] = now + dt.timedelta(seconds=delay)
                outcome = "retry_scheduled"
            since = clocks.get(row.endpoint_id) or now
            clocks[row.endpoint_id] = since
            if enabled.get(row.endpoint_id) and row.endpoint_id not in disable:
                if result.gone:
                    disable[row.endpoint_id] = "The endpoint answered 410 Gone."
                elif (now - since).total_seconds() >= settings.disable_after_seconds:
                    disable[row.endpoint_id] = (
                        f"Every attempt has failed since {since.isoformat(timespec='seconds')}."
                    )
                if row.endpoint_id in disable:
                    state["status"], outcome = DeliveryStatus.failed, "failed"
        finished.append(state)
        results.append(outcome)

    if attempts:
        session.execute(_ATTEMPTS.insert(), attempts)
    _bulk_update(session, [k for k in finished[0] if k != "_id"] if finished else [], finished)
    _bulk_update(session, [k for k in noted[0] if k != "_id"] if noted else [], noted)
    _write_clocks(session, clocks)
    for endpoint_id, reason in disable.items():
        endpoint = session.exec(
            select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        ).one()
        # Its other pending deliveries, ours in this group included, are skipped.
        delivery.disable_endpoint(session, endpoint, reason)
    return results


def _write_clocks(session: Session, clocks: dict[str, dt.datetime | None]) -> None:
    """Each endpoint's failure clock after this group: cleared by a success, started by the
    first failure of a run, left alone while a run goes on."""
    cleared = sorted(e for e, since in clocks.items() if since is None)
    if cleared:
        session.execute(
            _ENDPOINTS.update()
            .where(_ENDPOINTS.c.id.in_(cleared), _ENDPOINTS.c.failing_since.is_not(None))
            .values(failing_since=None)
        )
    # Only endpoints that failed in this group, locked above, so written outright.
    for endpoint_id in sorted(e for e, since in clocks.items() if since is not None):
        session.execute(
            _ENDPOINTS.update()
            .where(_ENDPOINTS.c.id == endpoint_id)
            .values(failing_since=clocks[endpoint_id])
        )


def step(
    token: str,
    finished: list[Outcome],
    limit: int,
    *,
    skip_endpoints: list[str] | None = None,
    where: tuple[sa.ColumnElement[bool], ...] = (),
) -> tuple[list[str], Claimed]:
    """One transaction: record ``finished`` sends, then claim up to ``limit`` more. One
    commit per round instead of two: on a busy database the round trips, not the rows,
    are what a delivery costs. Returns the recorded outcomes and the new claim."""
    for attempt in range(_RECORD_TRIES):
        try:
            with session_scope() as session:
                recorded = _record(session, token, finished) if finished else []
                claimed = (
                    claim(session, token, limit, skip_endpoints=skip_endpoints, where=where)
                    if limit > 0
                    else Claimed()
                )
            return recorded, claimed
        except sa.exc.OperationalError as exc:
            # Disabling an endpoint locks its pending rows after the endpoint, the opposite
            # order to recording; the database breaks such a deadlock by failing one side.
            state = getattr(exc.orig, "sqlstate", None)
            if state not in _RETRYABLE_SQLSTATES or attempt == _RECORD_TRIES - 1:
                raise
            log.warning("webhook_record_retried", sqlstate=state)
    raise AssertionError("unreachable")


def record(token: str, finished: list[Outcome]) -> list[str]:
    """Record a group of finished sends in one transaction; returns each one's outcome."""
    return step(token, finished, 0)[0]


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
    finished: list[Outcome] = []  # sent (or handed back), not yet recorded
    try:
        while True:
            now = time.monotonic()
            open_ = now < stop_at
            if not open_:
                finished += sender.cancel_waiting()
            claiming = open_ and (
                sender.idle() or (now >= next_claim and sender.room() >= refill_at)
            )
            if finished or claiming:
                limit = max(1, min(batch, sender.room())) if claiming else 0
                recorded, claimed = step(
                    token, finished, limit, skip_endpoints=sender.saturated(), where=where
                )
                outcomes += recorded
                finished = []
                outcomes += ["skipped"] * len(claimed.skipped)
                for send in claimed.sends:
                    sender.submit(send)
                if claiming and len(claimed) < limit:
                    next_claim = now + POLL_SECONDS  # nothing more due right now
                if claiming and len(claimed) == 0 and sender.idle():
                    break
            if sender.idle():
                if not open_:
                    break
                continue  # everything claimed was skipped, or time to claim again
            can_claim = open_ and now >= next_claim and sender.room() >= refill_at
            finished = sender.collect(
                timeout=0.0 if can_claim else POLL_SECONDS, linger=LINGER_SECONDS
            )
    finally:
        sender.close()
    if outcomes:
        log.info("webhook_pump", handled=len(outcomes), token=token)
    return outcomes
