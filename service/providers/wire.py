"""A team's provider credentials as a typed wire object: settings and a hint, never the key.

The rule: ``/v1/provider_credentials`` answers these classes; the key is write-only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class ProviderCredentialsObject(BaseModel):
    # Settings differ by provider; those not listed here are still returned as they are.
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["provider_credentials"] = "provider_credentials"
    provider: Literal["openai", "azure_openai", "together"]
    api_key_hint: str | None = None
    account: str
    created_at: int
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    endpoint: str | None = None
    api_version: str | None = None
    deployments: dict[str, str] | None = None


class ProviderCredentialsDeleted(BaseModel):
    id: str
    object: Literal["provider_credentials.deleted"] = "provider_credentials.deleted"
    deleted: bool
