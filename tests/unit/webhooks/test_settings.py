from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.webhooks.settings import WebhookSettings


class _Settings(BaseSettings):
    """Mirrors how service.config.Settings embeds the webhook group."""

    model_config = SettingsConfigDict(env_prefix="FTQ_", env_nested_delimiter="__", frozen=True)
    webhooks: WebhookSettings = WebhookSettings()


def test_defaults():
    settings = WebhookSettings()
    assert settings.retry_schedule_seconds == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert settings.jitter == 0.2 and settings.timeout_seconds == 15.0
    assert settings.max_response_body_bytes == 2048
    assert settings.allowed_networks == [] and settings.allowed_ports is None
    assert settings.allowed_schemes == ["https", "http"]
    assert settings.disable_after_seconds == 5 * 86400
    assert settings.secret_overlap_seconds == 86400
    assert settings.overload_penalty_seconds == 60
    assert settings.retry_after_max_factor == 2


def test_allowed_networks_from_a_comma_separated_env_var(monkeypatch):
    monkeypatch.setenv("FTQ_WEBHOOKS__ALLOWED_NETWORKS", "127.0.0.0/8, ::1/128,10.1.2.3/8")
    monkeypatch.setenv("FTQ_WEBHOOKS__ALLOWED_PORTS", "443,8443")
    monkeypatch.setenv("FTQ_WEBHOOKS__TIMEOUT_SECONDS", "2.5")
    settings = _Settings().webhooks
    assert settings.allowed_networks == ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
    assert settings.allowed_ports == [443, 8443]
    assert settings.timeout_seconds == 2.5


def test_json_lists_and_empty_values_from_env(monkeypatch):
    monkeypatch.setenv("FTQ_WEBHOOKS__ALLOWED_NETWORKS", '["192.168.0.0/16"]')
    monkeypatch.setenv("FTQ_WEBHOOKS__ALLOWED_PORTS", "")
    monkeypatch.setenv("FTQ_WEBHOOKS__ALLOWED_SCHEMES", "HTTPS")
    settings = _Settings().webhooks
    assert settings.allowed_networks == ["192.168.0.0/16"]
    assert settings.allowed_ports is None
    assert settings.allowed_schemes == ["https"]


@pytest.mark.parametrize(
    "field",
    [
        {"allowed_networks": "not-a-network"},
        {"allowed_ports": "0"},
        {"jitter": 1.5},
        {"retry_schedule_seconds": [5, -1]},
        {"timeout_seconds": 0},
    ],
)
def test_invalid_values_are_refused(field):
    with pytest.raises(ValidationError):
        WebhookSettings(**field)
