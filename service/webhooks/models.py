"""Webhook tables: endpoints, one delivery per (event, endpoint), every attempt, notices.

Pending work lives in ``webhook_deliveries`` (``status='pending'`` with ``next_attempt_at``
and a lease), never in a broker countdown: a sweeper re-finds whatever is due, so a dead
worker or a flushed Redis costs a delay, never an event.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import utcnow
from service.dbtypes import json_column


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # due at next_attempt_at (or being sent under a lease)
    succeeded = "succeeded"
    failed = "failed"  # attempts exhausted, 3xx/4xx on a manual send, or 410
    skipped = "skipped"  # the endpoint was disabled or deleted before it went out


class AttemptTrigger(enum.StrEnum):
    scheduled = "scheduled"  # the automatic run: immediate, then the retry schedule
    manual = "manual"  # replay, recover or test: one attempt, not rescheduled


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (sa.Index("ix_webhook_endpoints_team_pk", "team_id", "pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", max_length=32)
    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=512)
    # Empty list: every event type.
    event_types: list[str] = Field(default_factory=list, sa_column=json_column(nullable=False))
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=256)
    disabled_at: dt.datetime | None = None
    # Fernet tokens (service.crypto); the plaintext never touches the database.
    secret_encrypted: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    previous_secret_encrypted: str | None = Field(
        default=None, sa_column=sa.Column(sa.Text, nullable=True)
    )
    previous_secret_expires_at: dt.datetime | None = None
    # Start of the current run of failed attempts; cleared by any success.
    failing_since: dt.datetime | None = None
    # Per-endpoint sequence of the webhook_endpoint.* events it is the subject of.
    sequence: int = 0
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Fan-out is idempotent: one delivery per outbox event and endpoint.
        sa.UniqueConstraint("outbox_event_id", "endpoint_id", name="uq_webhook_delivery_event"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint_pk", "endpoint_id", "pk"),
        sa.Index("ix_webhook_deliveries_order", "endpoint_id", "object_id", "status"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    # The webhook-id header: stable across retries and replays (the receiver's dedupe key).
    msg_id: str = Field(unique=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", max_length=32)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", max_length=40)
    outbox_event_id: str | None = Field(default=None, max_length=40)  # None for test events
    event_type: str = Field(max_length=64)
    object_id: str = Field(max_length=64)
    sequence: int = 0
    # The exact body, built once, so every retry and replay signs and sends the same bytes.
    payload: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    status: str = Field(default=DeliveryStatus.pending, max_length=16)
    trigger: str = Field(default=AttemptTrigger.scheduled, max_length=16)
    attempts: int = 0  # attempts of the automatic run (decides the next wait)
    total_attempts: int = 0  # including manual ones
    next_attempt_at: dt.datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=96)
    lease_expires_at: dt.datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=256)
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    delivered_at: dt.datetime | None = None


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_delivery_pk", "delivery_id", "pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", max_length=32)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", max_length=40)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", max_length=40)
    attempt_number: int
    trigger: str = Field(max_length=16)
    status_code: int | None = None
    ok: bool = False
    latency_ms: float = 0.0
    response_body: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False))
    error: str | None = Field(default=None, max_length=256)
    connected_ip: str | None = Field(default=None, max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)


class WebhookEndpointNotice(SQLModel, table=True):
    """What happened to an endpoint that its team must hear about (e.g. auto-disable)."""

    __tablename__ = "webhook_endpoint_notices"

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=32)
    # No foreign key: a notice outlives the endpoint it is about.
    endpoint_id: str = Field(index=True, max_length=40)
    kind: str = Field(max_length=32)
    reason: str = Field(max_length=256)
    details: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    created_at: dt.datetime = Field(default_factory=utcnow)


def _ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def endpoint_object(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The API shape of an endpoint; the secret is never part of it (see ``secret``)."""
    return {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types or []),
        "enabled": endpoint.enabled,
        "status": "enabled" if endpoint.enabled else "disabled",
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": _ts(endpoint.disabled_at),
        "created_at": _ts(endpoint.created_at),
        "updated_at": _ts(endpoint.updated_at),
    }


def delivery_object(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "endpoint_id": delivery.endpoint_id,
        "webhook_id": delivery.msg_id,
        "event_id": delivery.outbox_event_id,
        "event_type": delivery.event_type,
        "object_id": delivery.object_id,
        "sequence": delivery.sequence,
        "status": delivery.status,
        "trigger": delivery.trigger,
        "attempts": delivery.total_attempts,
        "next_attempt_at": _ts(delivery.next_attempt_at)
        if delivery.status == DeliveryStatus.pending
        else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": _ts(delivery.created_at),
        "delivered_at": _ts(delivery.delivered_at),
    }


def attempt_object(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "object": "webhook_attempt",
        "delivery_id": attempt.delivery_id,
        "attempt_number": attempt.attempt_number,
        "trigger": attempt.trigger,
        "status_code": attempt.status_code,
        "ok": attempt.ok,
        "latency_ms": round(attempt.latency_ms, 2),
        "response_body": attempt.response_body,
        "error": attempt.error,
        "created_at": _ts(attempt.created_at),
    }


def notice_object(notice: WebhookEndpointNotice) -> dict[str, Any]:
    return {
        "id": notice.id,
        "object": "webhook_endpoint.notice",
        "endpoint_id": notice.endpoint_id,
        "kind": notice.kind,
        "reason": notice.reason,
        "created_at": _ts(notice.created_at),
    }
