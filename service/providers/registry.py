"""Which provider serves a job: the deployment default for now, per-team credentials later."""

from __future__ import annotations

import functools

from service.config import Settings, get_settings
from service.providers.base import Provider
from service.providers.openai_provider import OpenAICredentials, OpenAIProvider

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


@functools.cache
def _provider_for(credentials: OpenAICredentials, timeout: float, max_retries: int) -> Provider:
    return OpenAIProvider(credentials, timeout=timeout, max_retries=max_retries)


def default_provider(settings: Settings | None = None) -> Provider:
    settings = settings or get_settings()
    return _provider_for(
        default_credentials(settings),
        settings.provider_timeout_seconds,
        settings.provider_max_retries,
    )


def provider_for_account(account: str, settings: Settings | None = None) -> Provider:
    provider = default_provider(settings)
    if provider.account != account:
        # Per-team credentials arrive with the tenancy work; until then a job's account is
        # always the default one, so a mismatch means the deployment's key was changed.
        raise LookupError(f"no provider credentials for account {account}")
    return provider
