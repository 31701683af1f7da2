"""Which provider serves a job: the team's own credentials if it set some, else the default.

A job records the ``account`` (credential fingerprint) it was created under and keeps it for
life, so workers resolve providers by account: the default's, or a team credential row's
(active or retired). Providers are cached per full credential set, so each worker process
builds one SDK client per account.
"""

from __future__ import annotations

import functools

from sqlmodel import Session

from service.config import Settings, get_settings
from service.db import session_scope
from service.metrics import MeteredCalls
from service.providers import credentials as team_credentials
from service.providers.azure_provider import AzureCredentials, AzureOpenAIProvider
from service.providers.base import FineTuningProvider, InferenceProvider, Provider
from service.providers.openai_provider import OpenAICredentials, OpenAIProvider
from service.providers.together_provider import TogetherCredentials, TogetherProvider

LOCAL_ACCOUNT = "local"
# The sandbox accepts any bearer token; this one only ever goes to it.
SANDBOX_API_KEY = "sandbox"


def default_credentials(settings: Settings | None = None) -> OpenAICredentials:
    settings = settings or get_settings()
    base_url = settings.provider_base_url or f"http://127.0.0.1:{settings.sandbox_port}/v1"
    api_key = (
        settings.provider_api_key.get_secret_value()
        if settings.provider_api_key
        else SANDBOX_API_KEY
    )
    return OpenAICredentials(
        base_url=base_url,
        api_key=api_key,
        organization=settings.provider_organization,
        project=settings.provider_project,
    )


class _MeteredOpenAI(MeteredCalls, OpenAIProvider):
    pass


class _MeteredAzure(MeteredCalls, AzureOpenAIProvider):
    pass


@functools.cache
def _provider_for(
    credentials: OpenAICredentials | AzureCredentials | TogetherCredentials,
    timeout: float,
    max_retries: int,
    guarded: bool = False,
) -> Provider:
    if isinstance(credentials, TogetherCredentials):
        # Team credentials only: connections go through the SSRF policy, pinned.
        return TogetherProvider(
            credentials,
            timeout=timeout,
            max_retries=max_retries,
            http_client=team_credentials.http_client(),
        )
    provider: _MeteredAzure | _MeteredOpenAI
    if isinstance(credentials, AzureCredentials):
        provider = _MeteredAzure(credentials, timeout=timeout, max_retries=max_retries)
    else:
        provider = _MeteredOpenAI(credentials, timeout=timeout, max_retries=max_retries)
    if guarded:
        # A team's own base URL: every connection resolves, checks and pins the address
        # (the SSRF policy), not only the URL checked when the credentials were stored.
        provider._client = team_credentials.guarded(provider._client)
    return provider


def _cached(
    credentials: OpenAICredentials | AzureCredentials | TogetherCredentials,
    settings: Settings,
    *,
    guarded: bool = False,
) -> Provider:
    return _provider_for(
        credentials, settings.provider_timeout_seconds, settings.provider_max_retries, guarded
    )


def default_provider(settings: Settings | None = None) -> Provider:
    settings = settings or get_settings()
    return _cached(default_credentials(settings), settings)


def provider_for_team(session: Session, team_id: str, settings: Settings | None = None) -> Provider:
    """The team's credentials if set, else the deployment default."""
    settings = settings or get_settings()
    row = team_credentials.active(session, team_id)
    if row is None:
        return default_provider(settings)
    return _cached(team_credentials.credentials_of(row), settings, guarded=True)


def provider_for_account(
    account: str, settings: Settings | None = None, *, session: Session | None = None
) -> InferenceProvider:
    """The provider (for inference and screening) a job was created under. Pass ``session``
    when already inside one: on SQLite a second transaction would wait for the first one's
    write lock."""
    settings = settings or get_settings()
    if account == LOCAL_ACCOUNT:
        from service.providers.local.provider import local_provider

        return local_provider(settings)
    return fine_tuning_provider_for_account(account, settings, session=session)


def fine_tuning_provider_for_account(
    account: str, settings: Settings | None = None, *, session: Session | None = None
) -> FineTuningProvider:
    """The managed fine-tuning API behind ``account``; LookupError for ftq's own trainer,
    which has none."""
    settings = settings or get_settings()
    if account == LOCAL_ACCOUNT:
        raise LookupError("the local provider has no fine-tuning API; the local runner trains")
    provider = default_provider(settings)
    if provider.account == account:
        return provider
    if session is not None:
        row = team_credentials.find_by_account(session, account)
        found = team_credentials.credentials_of(row) if row else None
    else:
        with session_scope(settings) as own:
            row = team_credentials.find_by_account(own, account)
            found = team_credentials.credentials_of(row) if row else None
    if found is None:
        # The default key was changed, or the credential rows are gone.
        raise LookupError(f"no provider credentials for account {account}")
    return _cached(found, settings, guarded=True)
