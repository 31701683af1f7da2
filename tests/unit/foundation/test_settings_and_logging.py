from __future__ import annotations

import pytest

from service.config import InsecureConfiguration, Settings
from service.logging import REDACTED, redact_secrets


def test_dev_mode_runs_on_the_embedded_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.env == "dev"
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_broker_url == "filesystem://"
    assert settings.resolved_log_format == "console"


def test_production_refuses_insecure_defaults() -> None:
    with pytest.raises(InsecureConfiguration) as caught:
        Settings(env="production")
    message = str(caught.value)
    assert "FTQ_SECRET_KEY" in message and "FTQ_PROVIDER_API_KEY" in message


def test_production_with_real_secrets_starts_and_logs_json() -> None:
    settings = Settings(
        env="production",
        secret_key="s" * 40,
        encryption_keys="k",
        provider_api_key="sk-live",
        database_url="postgresql+psycopg://db/ftq",
        broker_url="redis://redis:6379/0",
    )
    assert settings.resolved_log_format == "json"
    assert not settings.is_sqlite


def test_redaction_removes_secrets_by_key_and_by_shape() -> None:
    event = {
        "event": "calling provider with Bearer sk-abcdefghijklmnop and ftq_sk_ABCDEF123",
        "api_key": "anything",
        "headers": {"Authorization": "Bearer x", "x-request-id": "req_1"},
        "nested": [{"webhook_secret": "whsec_abc"}, "whsec_QUJD"],
    }
    redacted = redact_secrets(None, "info", event)
    assert redacted["api_key"] == REDACTED
    assert "sk-abcdefghijklmnop" not in redacted["event"]
    assert "ftq_sk_ABCDEF123" not in redacted["event"]
    assert redacted["headers"]["Authorization"] == REDACTED
    assert redacted["headers"]["x-request-id"] == "req_1"
    assert redacted["nested"][0]["webhook_secret"] == REDACTED
    assert redacted["nested"][1] == REDACTED
