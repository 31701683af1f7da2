"""A team's provider credentials as the team manages them: set, read, delete — audited.

The rule: every change is audited in the transaction that makes it, here, where the rest of
a team's administration is; storage, encryption and the SSRF checks of the URL are the
provider adapters' (``service.providers.credentials``), which import no domain package.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from service.providers import credentials
from service.providers.credentials import ProviderCredential
from service.tenants import audit


def put(
    session: Session, team_id: str, kind: str, api_key: str, fields: dict[str, Any]
) -> ProviderCredential:
    """Set the team's credentials (replacing any); the key is encrypted before it is stored."""
    row, replaced = credentials.store(session, team_id, kind, api_key, fields)
    audit.record(
        session,
        None,
        "provider_credentials.put",
        "provider_credentials",
        row.id,
        {"provider": kind, "replaced": replaced.id if replaced else None},
        team_id=team_id,
    )
    return row


def get(session: Session, team_id: str) -> ProviderCredential:
    return credentials.get(session, team_id)


def delete(session: Session, team_id: str) -> ProviderCredential:
    """Return the team to the deployment's default provider."""
    row = credentials.retire(session, team_id)
    audit.record(
        session,
        None,
        "provider_credentials.delete",
        "provider_credentials",
        row.id,
        team_id=team_id,
    )
    return row
