"""A team's own provider credentials: OpenAI, Azure OpenAI or any compatible base URL.

The API key is stored only as a Fernet token (``service.crypto``: MultiFernet, newest key
first, ``reencrypt_all`` after prepending a key); reads return the settings and a
four-character hint, never the key. Replacing or deleting credentials *retires* the row
instead of removing it: jobs already running under the old account keep being tracked
(their ``account`` still resolves), while new jobs use the new credentials or the default.

A team's base URL or endpoint is a destination ftq's workers connect to on the team's
behalf, so it passes the SSRF policy (``service.netguard``, the same one as webhooks): at
registration the URL and every address its host resolves to must be public, unless an
operator lists the network in ``FTQ_PROVIDER_ALLOWED_NETWORKS``; at connect time
``http_client`` checks and pins every connection the SDK opens (DNS rebinding).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, TypeVar

import httpx2
import sqlalchemy as sa
from openai import OpenAI
from sqlmodel import Field, Session, SQLModel, select

from service import crypto, ids, netguard
from service.config import Settings, get_settings
from service.db import utcnow
from service.dbtypes import json_column
from service.errors import InvalidRequest, NotFound
from service.providers.azure_provider import AzureCredentials
from service.providers.openai_provider import OpenAICredentials
from service.providers.together_provider import TOGETHER_BASE_URL, TogetherCredentials

OPENAI_BASE_URL = "https://api.openai.com/v1"
ALLOW_SETTING = "FTQ_PROVIDER_ALLOWED_NETWORKS"


class CredentialKind(enum.StrEnum):
    openai = "openai"  # OpenAI itself, or any compatible base URL
    azure_openai = "azure_openai"
    together = "together"  # Together AI's fine-tuning API (service/providers/together_provider)


class ProviderCredential(SQLModel, table=True):
    __tablename__ = "provider_credentials"

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=32)
    kind: str = Field(max_length=16)
    # Fingerprint of the secret-bearing settings (jobs record it); not secret itself.
    account: str = Field(index=True, max_length=40)
    # Non-secret settings: base_url/organization/project or endpoint/api_version/deployments.
    config: dict[str, Any] = Field(default_factory=dict, sa_column=json_column(nullable=False))
    secret_ciphertext: str = Field(sa_type=sa.Text)
    key_hint: str = Field(default="", max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)
    retired_at: dt.datetime | None = None


Credentials = OpenAICredentials | AzureCredentials | TogetherCredentials
OpenAIClient = TypeVar("OpenAIClient", bound=OpenAI)


def network_policy(settings: Settings | None = None) -> netguard.Policy:
    settings = settings or get_settings()
    return netguard.Policy(
        allowed_networks=tuple(settings.provider_allowed_networks), allow_setting=ALLOW_SETTING
    )


def http_client(settings: Settings | None = None) -> httpx2.Client:
    """The ``http_client`` for an SDK client built from a team's credentials: every
    connection is resolved once, checked against the policy and pinned to that address."""
    settings = settings or get_settings()
    return netguard.guarded_http_client(
        network_policy(settings), timeout=settings.provider_timeout_seconds
    )


def guarded(client: OpenAIClient) -> OpenAIClient:
    """``client`` (OpenAI or AzureOpenAI, built from a team's credentials) with every
    connection going through the policy: ``provider._client = guarded(provider._client)``."""
    return client.with_options(http_client=http_client())


def _check_url(value: str, param: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise InvalidRequest(f"'{value}' is not an http(s) URL.", param=param)
    try:
        netguard.validate_url(value, network_policy())
    except netguard.UnsafeURL as refused:
        hint = f" ({refused.hint})" if refused.hint else ""
        raise InvalidRequest(
            f"This {param} is not allowed: {refused.reason}{hint}.",
            param=param,
            code="unsafe_provider_url",
        ) from None
    return value.rstrip("/")


def _hint(secret: str) -> str:
    return "…" + secret[-4:] if len(secret) >= 12 else "…"


def build(kind: str, config: dict[str, Any], secret: str) -> Credentials:
    """The typed credentials a provider is built from."""
    if kind == CredentialKind.together:
        return TogetherCredentials(
            api_key=secret, base_url=config.get("base_url") or TOGETHER_BASE_URL
        )
    if kind == CredentialKind.azure_openai:
        return AzureCredentials(
            endpoint=config["endpoint"],
            api_key=secret,
            api_version=config["api_version"],
            deployments=tuple(sorted((config.get("deployments") or {}).items())),
        )
    return OpenAICredentials(
        base_url=config.get("base_url") or OPENAI_BASE_URL,
        api_key=secret,
        organization=config.get("organization"),
        project=config.get("project"),
    )


def _normalise(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    if kind == CredentialKind.together:
        together_url = fields.get("base_url")
        return {
            "base_url": _check_url(together_url, "base_url") if together_url else TOGETHER_BASE_URL
        }
    if kind == CredentialKind.azure_openai:
        endpoint, version = fields.get("endpoint"), fields.get("api_version")
        if not endpoint:
            raise InvalidRequest("Azure OpenAI credentials need an endpoint.", param="endpoint")
        if not version:
            raise InvalidRequest(
                "Azure OpenAI credentials need an api_version.", param="api_version"
            )
        deployments = fields.get("deployments") or {}
        if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in deployments.items()):
            raise InvalidRequest(
                "deployments maps model names to deployment names.", param="deployments"
            )
        return {
            "endpoint": _check_url(endpoint, "endpoint"),
            "api_version": str(version),
            "deployments": dict(deployments),
        }
    if kind != CredentialKind.openai:
        raise InvalidRequest(
            f"Unknown provider '{kind}'; use 'openai', 'azure_openai' or 'together'.",
            param="provider",
        )
    base_url = fields.get("base_url")
    for header_field in ("organization", "project"):
        value = fields.get(header_field)
        if value and not (value.isascii() and value.isprintable() and len(value) <= 256):
            # Sent as OpenAI-Organization / OpenAI-Project headers on every call.
            raise InvalidRequest(
                f"{header_field} must be printable ASCII (at most 256 characters).",
                param=header_field,
            )
    return {
        "base_url": _check_url(base_url, "base_url") if base_url else OPENAI_BASE_URL,
        "organization": fields.get("organization") or None,
        "project": fields.get("project") or None,
    }


def active(session: Session, team_id: str) -> ProviderCredential | None:
    return session.exec(
        select(ProviderCredential).where(
            ProviderCredential.team_id == team_id,
            ProviderCredential.retired_at.is_(None),  # type: ignore[union-attr]
        )
    ).first()


def _retire_active(session: Session, team_id: str) -> ProviderCredential | None:
    current = session.exec(
        select(ProviderCredential)
        .where(
            ProviderCredential.team_id == team_id,
            ProviderCredential.retired_at.is_(None),  # type: ignore[union-attr]
        )
        .with_for_update()
    ).first()
    if current is not None:
        current.retired_at = utcnow()
        session.add(current)
        session.flush()
    return current


def store(
    session: Session, team_id: str, kind: str, api_key: str, fields: dict[str, Any]
) -> tuple[ProviderCredential, ProviderCredential | None]:
    """Store the team's credentials, retiring any active ones: (the new row, the retired
    row or None). The key is encrypted before it is stored. Callers audit the change
    (``service.tenants.provider_credentials``)."""
    if not api_key or not api_key.strip():
        raise InvalidRequest("api_key must not be empty.", param="api_key")
    api_key = api_key.strip()
    if not (api_key.isascii() and api_key.isprintable()) or " " in api_key:
        # It travels in an HTTP header; anything else would fail every call, later.
        raise InvalidRequest(
            "api_key must be printable ASCII without spaces, as providers issue them.",
            param="api_key",
        )
    config = _normalise(kind, fields)
    account = build(kind, config, api_key).account
    replaced = _retire_active(session, team_id)
    row = ProviderCredential(
        id=ids.new_id("cred_"),
        team_id=team_id,
        kind=kind,
        account=account,
        config=config,
        secret_ciphertext=crypto.encrypt(api_key),
        key_hint=_hint(api_key),
    )
    session.add(row)
    session.flush()
    return row, replaced


def get(session: Session, team_id: str) -> ProviderCredential:
    row = active(session, team_id)
    if row is None:
        raise NotFound(
            "This team has no provider credentials; jobs use the deployment's default.",
            code="provider_credentials_not_found",
        )
    return row


def retire(session: Session, team_id: str) -> ProviderCredential:
    """Retire the team's active credentials (rows stay: running jobs keep their account)."""
    row = _retire_active(session, team_id)
    if row is None:
        raise NotFound(
            "This team has no provider credentials to delete.",
            code="provider_credentials_not_found",
        )
    return row


def credentials_of(row: ProviderCredential) -> Credentials:
    return build(row.kind, row.config, crypto.decrypt(row.secret_ciphertext))


def find_by_account(session: Session, account: str) -> ProviderCredential | None:
    """Any row (active or retired) with this fingerprint: jobs keep their account for life."""
    return session.exec(
        select(ProviderCredential)
        .where(ProviderCredential.account == account)
        .order_by(ProviderCredential.retired_at.is_not(None), sa.desc(ProviderCredential.pk))  # type: ignore[union-attr, arg-type]
    ).first()


def reencrypt_all(session: Session) -> int:
    """Re-encrypt every stored key under the newest encryption key; returns the count."""
    rows = list(session.exec(select(ProviderCredential).with_for_update()))
    for row in rows:
        row.secret_ciphertext = crypto.rotate(row.secret_ciphertext)
        session.add(row)
    return len(rows)


def credential_object(row: ProviderCredential) -> dict[str, Any]:
    """What the API shows: settings and a hint, never the key."""
    return {
        "id": row.id,
        "object": "provider_credentials",
        "provider": row.kind,
        **row.config,
        "api_key_hint": row.key_hint,
        "account": row.account,
        "created_at": int(row.created_at.timestamp()),
    }
