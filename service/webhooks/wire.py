"""Webhook endpoints, deliveries, attempts, notices and the event envelope as typed wire
objects.

The rule: the ``/v1/webhook_endpoints`` routes answer these classes, and ``WebhookEvent``
documents the body every delivery carries (``service.webhooks.events.build_payload``);
its ``data`` is the wire object the event is about (a file, job or checkpoint).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

DeliveryStatusName = Literal["pending", "succeeded", "failed", "skipped"]
TriggerName = Literal["scheduled", "manual"]


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None = None
    disabled_at: int | None = None
    created_at: int
    updated_at: int | None = None


class WebhookEndpointWithSecret(WebhookEndpointObject):
    """The endpoint as created: its signing secret is in this response only."""

    secret: str


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool


class WebhookSecretObject(BaseModel):
    object: Literal["webhook_endpoint.secret"] = "webhook_endpoint.secret"
    endpoint_id: str
    secret: str
    previous_secret_expires_at: int | None = None


class WebhookDeliveryObject(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint_id: str
    webhook_id: str
    event_id: str | None = None
    event_type: str
    object_id: str
    sequence: int
    status: DeliveryStatusName
    trigger: TriggerName
    attempts: int
    next_attempt_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: int
    delivered_at: int | None = None


class WebhookAttemptObject(BaseModel):
    id: str
    object: Literal["webhook_attempt"] = "webhook_attempt"
    delivery_id: str
    attempt_number: int
    trigger: TriggerName
    status_code: int | None = None
    ok: bool
    latency_ms: float
    response_body: str
    error: str | None = None
    created_at: int


class WebhookNoticeObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint.notice"] = "webhook_endpoint.notice"
    endpoint_id: str
    kind: str
    reason: str
    created_at: int


class WebhookRecoveryObject(BaseModel):
    object: Literal["webhook_endpoint.recovery"] = "webhook_endpoint.recovery"
    endpoint_id: str
    since: int
    recovered: int


class WebhookEvent(BaseModel):
    """The JSON body of every delivery (signed per the Standard Webhooks spec)."""

    id: str
    object: Literal["event"] = "event"
    type: str
    created_at: int
    sequence: int
    data: dict[str, Any]
