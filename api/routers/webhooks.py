"""/v1/webhook_endpoints: endpoints, secrets, deliveries, attempts, replay, recover, test.

Admins write and see secrets; members and viewers may list and read the rest.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.auth import Admin, Reader
from api.pagination import ListObject, page
from service.db import session_scope
from service.webhooks import service as webhooks
from service.webhooks.models import attempt_object, delivery_object, endpoint_object, notice_object
from service.webhooks.wire import (
    WebhookAttemptObject,
    WebhookDeliveryObject,
    WebhookEndpointDeleted,
    WebhookEndpointObject,
    WebhookEndpointWithSecret,
    WebhookNoticeObject,
    WebhookRecoveryObject,
    WebhookSecretObject,
)

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"])

Limit = Annotated[int, Query(ge=1, le=100)]


class CreateEndpointInput(BaseModel):
    url: str
    description: str = ""
    event_types: list[str] = Field(default_factory=list)
    enabled: bool = True


class UpdateEndpointInput(BaseModel):
    url: str | None = None
    description: str | None = None
    event_types: list[str] | None = None
    enabled: bool | None = None


class RecoverInput(BaseModel):
    since: int


@router.post("", response_model=WebhookEndpointWithSecret)
def create_endpoint(body: CreateEndpointInput, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        endpoint, secret = webhooks.create_endpoint(session, principal.team_id, **body.model_dump())
        return {**endpoint_object(endpoint), "secret": secret}


@router.get("", response_model=ListObject[WebhookEndpointObject])
def list_endpoints(
    principal: Reader, after: str | None = None, limit: Limit = 20
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = webhooks.list_endpoints(
            session, principal.team_id, after=after, limit=limit
        )
        return page([endpoint_object(e) for e in rows], has_more)


# Declared before /{endpoint_id} so "notices" is not taken for an id.
@router.get("/notices", response_model=ListObject[WebhookNoticeObject])
def list_notices(principal: Reader, after: str | None = None, limit: Limit = 20) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = webhooks.list_notices(session, principal.team_id, after=after, limit=limit)
        return page([notice_object(n) for n in rows], has_more)


@router.get("/{endpoint_id}", response_model=WebhookEndpointObject)
def retrieve_endpoint(endpoint_id: str, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return endpoint_object(webhooks.get_endpoint(session, principal.team_id, endpoint_id))


@router.post("/{endpoint_id}", response_model=WebhookEndpointObject)
@router.patch("/{endpoint_id}", response_model=WebhookEndpointObject)
def update_endpoint(
    endpoint_id: str, body: UpdateEndpointInput, principal: Admin
) -> dict[str, Any]:
    with session_scope() as session:
        endpoint = webhooks.update_endpoint(
            session, principal.team_id, endpoint_id, **body.model_dump(exclude_unset=True)
        )
        return endpoint_object(endpoint)


@router.delete("/{endpoint_id}", response_model=WebhookEndpointDeleted)
def delete_endpoint(endpoint_id: str, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return webhooks.delete_endpoint(session, principal.team_id, endpoint_id)


@router.get("/{endpoint_id}/secret", response_model=WebhookSecretObject)
def retrieve_secret(endpoint_id: str, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return webhooks.reveal_secret(session, principal.team_id, endpoint_id)


@router.post("/{endpoint_id}/rotate_secret", response_model=WebhookSecretObject)
def rotate_secret(endpoint_id: str, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return webhooks.rotate_secret(session, principal.team_id, endpoint_id)


@router.get("/{endpoint_id}/deliveries", response_model=ListObject[WebhookDeliveryObject])
def list_deliveries(
    endpoint_id: str,
    principal: Reader,
    after: str | None = None,
    limit: Limit = 20,
    status: str | None = None,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = webhooks.list_deliveries(
            session, principal.team_id, endpoint_id, after=after, limit=limit, status=status
        )
        return page([delivery_object(d) for d in rows], has_more)


@router.get("/{endpoint_id}/deliveries/{delivery_id}", response_model=WebhookDeliveryObject)
def retrieve_delivery(endpoint_id: str, delivery_id: str, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return delivery_object(
            webhooks.get_delivery(session, principal.team_id, endpoint_id, delivery_id)
        )


@router.get(
    "/{endpoint_id}/deliveries/{delivery_id}/attempts",
    response_model=ListObject[WebhookAttemptObject],
)
def list_attempts(
    endpoint_id: str,
    delivery_id: str,
    principal: Reader,
    after: str | None = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = webhooks.list_attempts(
            session, principal.team_id, endpoint_id, delivery_id, after=after, limit=limit
        )
        return page([attempt_object(a) for a in rows], has_more)


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay", response_model=WebhookDeliveryObject)
def replay_delivery(endpoint_id: str, delivery_id: str, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return delivery_object(
            webhooks.replay(session, principal.team_id, endpoint_id, delivery_id)
        )


@router.post("/{endpoint_id}/recover", response_model=WebhookRecoveryObject)
def recover(endpoint_id: str, body: RecoverInput, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return webhooks.recover(session, principal.team_id, endpoint_id, body.since)


@router.post("/{endpoint_id}/test", response_model=WebhookDeliveryObject)
def send_test(endpoint_id: str, principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return delivery_object(webhooks.send_test(session, principal.team_id, endpoint_id))
