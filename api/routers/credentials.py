"""/v1/provider_credentials: the team's own upstream credentials (admins only).

PUT sets them (replacing any), GET shows everything but the key, DELETE returns the team
to the deployment's default provider. The key is write-only.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from api.auth import Admin
from service.db import session_scope
from service.providers.credentials import credential_object
from service.providers.wire import ProviderCredentialsDeleted, ProviderCredentialsObject
from service.tenants import provider_credentials as credentials

router = APIRouter(prefix="/v1/provider_credentials", tags=["provider credentials"])


class PutCredentialsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "azure_openai", "together"] = "openai"
    # SecretStr: never echoed by validation errors or reprs.
    api_key: SecretStr
    # openai: OpenAI itself by default, or any compatible base URL; together: Together's
    # API (https://api.together.xyz/v1 by default).
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    # azure_openai
    endpoint: str | None = None
    api_version: str | None = None
    deployments: dict[str, str] = Field(default_factory=dict)


@router.put("", response_model=ProviderCredentialsObject)
def put_credentials(body: PutCredentialsInput, principal: Admin) -> dict[str, Any]:
    fields = body.model_dump(exclude={"provider", "api_key"})
    with session_scope() as session:
        row = credentials.put(
            session, principal.team_id, body.provider, body.api_key.get_secret_value(), fields
        )
        return credential_object(row)


@router.get("", response_model=ProviderCredentialsObject)
def get_credentials(principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        return credential_object(credentials.get(session, principal.team_id))


@router.delete("", response_model=ProviderCredentialsDeleted)
def delete_credentials(principal: Admin) -> dict[str, Any]:
    with session_scope() as session:
        row = credentials.delete(session, principal.team_id)
        return {"id": row.id, "object": "provider_credentials.deleted", "deleted": True}
