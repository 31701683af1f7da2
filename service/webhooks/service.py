"""Webhook endpoints and their deliveries, as a team sees them.

Every query is scoped by the caller's team: another team's endpoint or delivery raises
``NotFound`` exactly like a missing one. Services never commit (the unit of work does) and
wake a delivery pump only through ``delivery.wake``, whose message goes out after the commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from service import ids
from service.config import get_settings
from service.crypto import decrypt, encrypt
from service.db import utcnow
from service.errors import Conflict, InvalidRequest, NotFound
from service.pagination import keyset_page
from service.webhooks import events
from service.webhooks.delivery import new_delivery, wake
from service.webhooks.models import (
    AttemptTrigger,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointNotice,
    endpoint_object,
)
from service.webhooks.signing import generate_secret
from service.webhooks.ssrf import UnsafeWebhookURL, validate_webhook_url

# What a team can subscribe to; test events go only where they are sent explicitly.
SUBSCRIBABLE_EVENT_TYPES = frozenset(events.EVENT_TYPES - {events.WEBHOOK_TEST})
MAX_DESCRIPTION_CHARS = 512
# Bounds one recover call; a larger backlog takes several calls.
MAX_RECOVER = 10_000


class UnsafeURL(InvalidRequest):
    default_code = "unsafe_webhook_url"


def _check_url(url: str) -> str:
    try:
        validate_webhook_url(url, get_settings().webhooks)
    except UnsafeWebhookURL as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        message = f"This webhook URL is not allowed: {exc.reason}{hint}."
        raise UnsafeURL(message, param="url") from None
    return url


def _check_event_types(event_types: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(event_types))
    unknown = [t for t in unique if t not in SUBSCRIBABLE_EVENT_TYPES]
    if unknown:
        raise InvalidRequest(
            f"Unknown event type(s): {', '.join(unknown)}. "
            f"Use any of: {', '.join(sorted(SUBSCRIBABLE_EVENT_TYPES))}.",
            param="event_types",
            code="invalid_event_type",
        )
    return unique


def _check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidRequest(
            f"description must be at most {MAX_DESCRIPTION_CHARS} characters.",
            param="description",
        )
    return description


def create_endpoint(
    session: Session,
    team_id: str,
    *,
    url: str,
    description: str = "",
    event_types: Iterable[str] = (),
    enabled: bool = True,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it with its plaintext secret (shown to the admin)."""
    secret = generate_secret()
    endpoint = WebhookEndpoint(
        id=ids.new_id("we_"),
        team_id=team_id,
        url=_check_url(url),
        description=_check_description(description),
        event_types=_check_event_types(event_types),
        enabled=enabled,
        secret_encrypted=encrypt(secret),
    )
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def get_endpoint(
    session: Session, team_id: str, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.team_id == team_id
    )
    if lock:
        query = query.with_for_update()
    endpoint = session.exec(query).first()
    if endpoint is None:
        raise NotFound(f"No webhook endpoint with id '{endpoint_id}'.", param="endpoint_id")
    return endpoint


def _page(
    session: Session, model: Any, scope: sa.ColumnElement[bool], after: str | None, limit: int
) -> tuple[list[Any], bool]:
    """Newest first by insertion order, cursor = the last id seen (OpenAI's ``after``)."""
    return keyset_page(
        session,
        select(model).where(scope),
        after=after,
        limit=limit,
        id_column=model.id,
        order=(model.pk,),
        scope=[scope],
    )


def list_endpoints(
    session: Session, team_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[WebhookEndpoint], bool]:
    return _page(session, WebhookEndpoint, col(WebhookEndpoint.team_id) == team_id, after, limit)


def update_endpoint(
    session: Session,
    team_id: str,
    endpoint_id: str,
    *,
    url: str | None = None,
    description: str | None = None,
    event_types: Iterable[str] | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, team_id, endpoint_id, lock=True)
    if url is not None:
        endpoint.url = _check_url(url)
    if description is not None:
        endpoint.description = _check_description(description)
    if event_types is not None:
        endpoint.event_types = _check_event_types(event_types)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        if enabled:
            # A fresh start: the failure clock restarts with the next failed attempt.
            endpoint.disabled_reason = endpoint.disabled_at = endpoint.failing_since = None
        else:
            endpoint.disabled_reason, endpoint.disabled_at = "Disabled by the team.", utcnow()
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    return endpoint


def delete_endpoint(session: Session, team_id: str, endpoint_id: str) -> dict[str, Any]:
    """Delete the endpoint with its deliveries and attempts (notices are kept)."""
    endpoint = get_endpoint(session, team_id, endpoint_id, lock=True)
    session.execute(sa.delete(WebhookAttempt).where(col(WebhookAttempt.endpoint_id) == endpoint.id))
    session.execute(
        sa.delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint.id)
    )
    session.delete(endpoint)
    return {"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True}


def _secret_object(endpoint: WebhookEndpoint, secret: str) -> dict[str, Any]:
    expires = endpoint.previous_secret_expires_at
    return {
        "object": "webhook_endpoint.secret",
        "endpoint_id": endpoint.id,
        "secret": secret,
        "previous_secret_expires_at": int(expires.timestamp())
        if expires is not None and expires > utcnow()
        else None,
    }


def reveal_secret(session: Session, team_id: str, endpoint_id: str) -> dict[str, Any]:
    endpoint = get_endpoint(session, team_id, endpoint_id)
    return _secret_object(endpoint, decrypt(endpoint.secret_encrypted))


def rotate_secret(session: Session, team_id: str, endpoint_id: str) -> dict[str, Any]:
    """A new secret; the current one keeps signing for ``secret_overlap_seconds``."""
    endpoint = get_endpoint(session, team_id, endpoint_id, lock=True)
    overlap = get_settings().webhooks.secret_overlap_seconds
    secret = generate_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = utcnow() + dt.timedelta(seconds=overlap)
    endpoint.secret_encrypted = encrypt(secret)
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    return _secret_object(endpoint, secret)


def list_deliveries(
    session: Session,
    team_id: str,
    endpoint_id: str,
    *,
    after: str | None = None,
    limit: int = 20,
    status: str | None = None,
) -> tuple[list[WebhookDelivery], bool]:
    endpoint = get_endpoint(session, team_id, endpoint_id)
    scope = sa.and_(
        col(WebhookDelivery.team_id) == team_id,
        col(WebhookDelivery.endpoint_id) == endpoint.id,
    )
    if status is not None:
        if status not in DeliveryStatus.__members__:
            raise InvalidRequest(
                f"status must be one of {', '.join(DeliveryStatus.__members__)}.", param="status"
            )
        scope = sa.and_(scope, col(WebhookDelivery.status) == status)
    return _page(session, WebhookDelivery, scope, after, limit)


def get_delivery(
    session: Session, team_id: str, endpoint_id: str, delivery_id: str, *, lock: bool = False
) -> WebhookDelivery:
    query = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.endpoint_id == endpoint_id,
        WebhookDelivery.team_id == team_id,
    )
    if lock:
        query = query.with_for_update()
    delivery = session.exec(query).first()
    if delivery is None:
        raise NotFound(f"No webhook delivery with id '{delivery_id}'.", param="delivery_id")
    return delivery


def list_attempts(
    session: Session,
    team_id: str,
    endpoint_id: str,
    delivery_id: str,
    *,
    after: str | None = None,
    limit: int = 20,
) -> tuple[list[WebhookAttempt], bool]:
    delivery = get_delivery(session, team_id, endpoint_id, delivery_id)
    scope = sa.and_(
        col(WebhookAttempt.team_id) == team_id,
        col(WebhookAttempt.delivery_id) == delivery.id,
    )
    return _page(session, WebhookAttempt, scope, after, limit)


def _require_enabled(endpoint: WebhookEndpoint) -> None:
    if not endpoint.enabled:
        raise Conflict(
            "This webhook endpoint is disabled; enable it before sending to it.",
            param="endpoint_id",
            code="endpoint_disabled",
        )


def _resend(delivery: WebhookDelivery) -> None:
    """Queue one manual attempt with the same body and webhook-id."""
    delivery.next_attempt_at = utcnow()
    delivery.updated_at = utcnow()
    if delivery.status != DeliveryStatus.pending:
        # A finished delivery gets one more attempt; one still in its automatic run is
        # only brought forward (and keeps its schedule and any lease it holds).
        delivery.status = DeliveryStatus.pending
        delivery.trigger = AttemptTrigger.manual
        delivery.lease_owner = delivery.lease_expires_at = None


def replay(session: Session, team_id: str, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    endpoint = get_endpoint(session, team_id, endpoint_id)
    _require_enabled(endpoint)
    delivery = get_delivery(session, team_id, endpoint.id, delivery_id, lock=True)
    _resend(delivery)
    session.add(delivery)
    session.flush()
    wake()
    return delivery


def recover(session: Session, team_id: str, endpoint_id: str, since: int) -> dict[str, Any]:
    """Resend every failed or skipped delivery created at or after ``since`` (Unix s)."""
    endpoint = get_endpoint(session, team_id, endpoint_id)
    _require_enabled(endpoint)
    try:
        start = dt.datetime.fromtimestamp(since, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidRequest("since is not a valid Unix timestamp.", param="since") from None
    if start > utcnow():
        raise InvalidRequest("since is in the future.", param="since")
    deliveries = session.exec(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.team_id == team_id,
            WebhookDelivery.endpoint_id == endpoint.id,
            col(WebhookDelivery.status).in_([DeliveryStatus.failed, DeliveryStatus.skipped]),
            col(WebhookDelivery.created_at) >= start,
        )
        .order_by(col(WebhookDelivery.pk))
        .limit(MAX_RECOVER)
        .with_for_update()
    ).all()
    for delivery in deliveries:
        _resend(delivery)
        session.add(delivery)
    session.flush()
    if deliveries:
        wake(len(deliveries))
    return {
        "object": "webhook_endpoint.recovery",
        "endpoint_id": endpoint.id,
        "since": since,
        "recovered": len(deliveries),
    }


def send_test(session: Session, team_id: str, endpoint_id: str) -> WebhookDelivery:
    """A ``webhook.test`` event to this endpoint only: one attempt, recorded like any other."""
    endpoint = get_endpoint(session, team_id, endpoint_id)
    _require_enabled(endpoint)
    now = utcnow()
    payload = events.build_payload(
        ids.outbox_id(),
        events.WEBHOOK_TEST,
        int(now.timestamp()),
        endpoint_object(endpoint),
        0,
    )
    delivery = new_delivery(
        endpoint,
        event_type=events.WEBHOOK_TEST,
        object_id=endpoint.id,
        sequence=0,
        payload=payload,
        outbox_event_id=None,
        trigger=AttemptTrigger.manual,
    )
    session.add(delivery)
    session.flush()
    wake()
    return delivery


def list_notices(
    session: Session, team_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[WebhookEndpointNotice], bool]:
    return _page(
        session,
        WebhookEndpointNotice,
        col(WebhookEndpointNotice.team_id) == team_id,
        after,
        limit,
    )
