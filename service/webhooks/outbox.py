"""The transactional outbox: one row per domain event, written in the same transaction as
the state change that caused it. Webhook delivery reads from here, so a crash between the
commit and a publish loses nothing.

An event type outside the catalogue (``service.webhooks.events.EventType``) or data that is
not plain JSON is refused here, when the row is written, so the mistake fails the caller's
transaction instead of being found (and dropped) at fan-out.

Latency: a transaction that writes outbox rows for a team with an enabled endpoint wakes the
fan-out once, right after it commits, so a delivery starts within a task hop of the state
change; beat's fan-out every sweep interval stays as the safety net for a wake-up the broker
lost (and marks the rows of teams without endpoints dispatched).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel

from service import ids
from service.db import utcnow
from service.dbtypes import json_column
from service.dispatch import enqueue
from service.webhooks.events import checked_event_type
from service.webhooks.models import WebhookEndpoint


class OutboxEvent(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("object_id", "event_type", "sequence", name="uq_outbox_object_seq"),
        sa.Index("ix_outbox_undispatched", "dispatched_at", "pk"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=32)
    event_type: str = Field(max_length=64)
    object_id: str = Field(max_length=64)
    sequence: int
    payload: dict[str, Any] = Field(sa_column=json_column(nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow)
    dispatched_at: dt.datetime | None = None


def record_event(
    session: Session,
    *,
    team_id: str,
    event_type: str,
    object_id: str,
    sequence: int,
    data: dict[str, Any],
) -> OutboxEvent:
    """Add an outbox row to the caller's transaction (committed with the state change).

    Raises UnknownEventType (a ValueError) for a type not in the catalogue, and ValueError
    for data that JSON cannot carry (NaN, infinities, objects)."""
    checked = checked_event_type(event_type)
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{checked} event data is not plain JSON: {exc}") from exc
    event = OutboxEvent(
        id=ids.outbox_id(),
        team_id=team_id,
        event_type=checked.value,
        object_id=object_id,
        sequence=sequence,
        payload=data,
    )
    session.add(event)
    _wake_fanout(session, team_id)
    return event


_WOKEN = "ftq_outbox_fanout_woken"


def _wake_fanout(session: Session, team_id: str) -> None:
    """One fan-out message per transaction, however many rows it writes (the flag names the
    transaction, so a session reused after a commit or a rollback wakes it again), and none
    for a team without an enabled endpoint: most state changes have nobody to tell."""
    transaction = session.get_transaction()
    if transaction is not None and session.info.get(_WOKEN) is transaction:
        return
    listening = session.execute(
        sa.select(sa.literal(1))
        .where(
            WebhookEndpoint.team_id == team_id,  # type: ignore[arg-type]
            WebhookEndpoint.enabled == sa.true(),  # type: ignore[arg-type]
        )
        .limit(1)
    ).first()
    if listening is None:
        return
    session.info[_WOKEN] = transaction
    enqueue("webhooks.fanout")
