"""Tenancy logic on SQLite: limits, rate-limit windows, audit redaction, key rotation,
credentials encryption and rotation, and provider resolution by account."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.fernet import Fernet
from sqlmodel import select

from service import crypto
from service.config import get_settings, reset_settings_cache
from service.db import session_scope, utcnow
from service.errors import InvalidRequest, PayloadTooLarge, RateLimited, Unauthenticated
from service.files import quota
from service.providers import credentials, registry
from service.providers.azure_provider import AzureCredentials, AzureOpenAIProvider
from service.tenants import audit, limits, ratelimit
from service.tenants import provider_credentials as team_credentials
from service.tenants import service as tenants
from service.tenants.models import AuditEvent


def _team(name: str = "t") -> str:
    with session_scope() as session:
        return tenants.create_team(session, name).id


class TestRateLimitWindow:
    def test_counts_per_key_and_resets_with_the_window(self) -> None:
        counter = ratelimit.MemoryCounter()
        assert [counter.hit("a", 1) for _ in range(3)] == [1, 2, 3]
        assert counter.hit("b", 1) == 1
        assert counter.hit("a", 2) == 1

    def test_decision_gives_retry_after_until_the_window_ends(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: object
    ) -> None:
        monkeypatch.delenv("FTQ_BROKER_URL", raising=False)
        reset_settings_cache()
        now = 6000.0 + 45  # 45 s into a window
        team, key = f"team-{os.getpid()}", "key-rl"
        assert ratelimit.hit(team, key, 2, now=now).allowed
        assert ratelimit.hit(team, key, 2, now=now).remaining == 0
        refused = ratelimit.hit(team, key, 2, now=now)
        assert not refused.allowed and refused.retry_after == 15
        assert ratelimit.hit(team, key, 2, now=now + 15).allowed


@pytest.mark.usefixtures("db")
class TestQuotas:
    def test_defaults_overrides_and_zero(self) -> None:
        team_id = _team()
        with session_scope() as session:
            assert limits.effective_limits(session, team_id).max_files == 1000
            limits.set_overrides(session, team_id, {"max_files": 0, "max_active_jobs": 3})
        with session_scope() as session:
            effective = limits.effective_limits(session, team_id)
            assert (effective.max_files, effective.max_active_jobs) == (0, 3)
            with pytest.raises(RateLimited) as caught:
                quota.check_file_create(session, team_id, 10)
            assert caught.value.code == "quota_exceeded" and "may keep 0" in caught.value.message
            limits.set_overrides(session, team_id, {"max_files": None})
        with session_scope() as session:
            assert limits.effective_limits(session, team_id).max_files == 1000
            with pytest.raises(InvalidRequest):
                limits.set_overrides(session, team_id, {"bogus": 1})

    def test_storage_quota_names_the_figures(self) -> None:
        team_id = _team()
        with session_scope() as session:
            limits.set_overrides(session, team_id, {"max_stored_bytes": 100})
        with session_scope() as session:
            quota.check_file_create(session, team_id, 100)
            with pytest.raises(PayloadTooLarge) as caught:
                quota.check_file_create(session, team_id, 101)
        assert caught.value.status_code == 413 and "101 bytes" in caught.value.message
        assert "100 bytes" in caught.value.message


@pytest.mark.usefixtures("db")
class TestKeysAndAudit:
    def test_rotation_grace_then_revocation(self) -> None:
        team_id = _team()
        with session_scope() as session:
            old, old_token = tenants.create_key(session, team_id, "member", "ci")
        with session_scope() as session:
            new, new_token = tenants.rotate_key(session, team_id, old.id, grace_seconds=60)
        with session_scope() as session:
            assert tenants.authenticate(session, old_token).key_id == old.id  # in its grace
            assert tenants.authenticate(session, new_token).key_id == new.id
            tenants.revoke_key(session, team_id, old.id)
        with session_scope() as session, pytest.raises(Unauthenticated):
            tenants.authenticate(session, old_token)
        with session_scope() as session, pytest.raises(InvalidRequest):
            tenants.rotate_key(session, team_id, old.id)

    def test_operator_role_only_on_the_platform_team(self) -> None:
        team_id = _team()
        with session_scope() as session, pytest.raises(InvalidRequest):
            tenants.create_key(session, team_id, "operator")
        with session_scope() as session:
            key, _token = tenants.create_operator_key(session)
            assert key.role == "operator"
            assert tenants.platform_team(session).id == key.team_id
            assert key.team_id not in {t.id for t in tenants.list_teams(session)[0]}

    def test_details_are_redacted_but_display_prefixes_kept(self) -> None:
        team_id = _team()
        with session_scope() as session:
            event = audit.record(
                session,
                None,
                "x.test",
                "x",
                "1",
                {"prefix": "ftq_sk_AbCdEf", "note": "Bearer sk-abcdefghijkl", "api_key": "v"},
                team_id=team_id,
            )
            event_id = event.id
        with session_scope() as session:
            row = session.exec(select(AuditEvent).where(AuditEvent.id == event_id)).one()
        assert row.details == {
            "prefix": "ftq_sk_AbCdEf",
            "note": "[redacted]",
            "api_key": "[redacted]",
        }

    def test_events_page_newest_first_and_filter(self) -> None:
        team_id = _team()
        with session_scope() as session:
            for index in range(5):
                audit.record(
                    session, None, f"thing.{index % 2}", "thing", str(index), team_id=team_id
                )
        with session_scope() as session:
            first, more = audit.list_events(
                session, team_id, audit.AuditFilter(action="thing.*"), limit=3
            )
            rest, more2 = audit.list_events(
                session, team_id, audit.AuditFilter(action="thing.*"), after=first[-1].id
            )
            zeros, _ = audit.list_events(session, team_id, audit.AuditFilter(action="thing.0"))
        assert more and not more2
        assert [e.target_id for e in first + rest] == ["4", "3", "2", "1", "0"]
        assert [e.target_id for e in zeros] == ["4", "2", "0"]


@pytest.mark.usefixtures("db")
class TestCredentials:
    def test_stored_encrypted_rotated_and_resolved_by_account(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The base URL is on loopback: the operator allows it (the SSRF policy refuses it
        # otherwise; tests/unit/hardening covers the refusal).
        monkeypatch.setenv("FTQ_PROVIDER_ALLOWED_NETWORKS", "127.0.0.0/8")
        reset_settings_cache()
        team_id = _team()
        secret = "sk-unit-secret-0123456789"
        with session_scope() as session:
            row = team_credentials.put(
                session, team_id, "openai", secret, {"base_url": "http://127.0.0.1:9/v1"}
            )
            account, ciphertext = row.account, row.secret_ciphertext
        assert secret not in ciphertext and crypto.decrypt(ciphertext) == secret

        # Rotation: prepend a new key, re-encrypt, then the old key can go.
        old_key = crypto.derive_key(get_settings().secret_key.get_secret_value()).decode()
        new_key = Fernet.generate_key().decode()
        monkeypatch.setenv("FTQ_ENCRYPTION_KEYS", f"{new_key},{old_key}")
        reset_settings_cache()
        with session_scope() as session:
            assert credentials.reencrypt_all(session) == 1
        monkeypatch.setenv("FTQ_ENCRYPTION_KEYS", new_key)
        reset_settings_cache()
        with session_scope() as session:
            provider = registry.provider_for_account(account, session=session)
            assert provider.account == account
            assert provider.credentials.api_key == secret  # type: ignore[attr-defined]
            assert registry.provider_for_team(session, team_id) is provider
        # Without a session the registry opens its own (outside any other transaction).
        assert registry.provider_for_account(account) is provider

        # Retired rows still resolve (running jobs keep their account); the team falls back.
        with session_scope() as session:
            team_credentials.delete(session, team_id)
        with session_scope() as session:
            assert registry.provider_for_account(account, session=session) is provider
            assert registry.provider_for_team(session, team_id) is registry.default_provider()
        with pytest.raises(LookupError):
            registry.provider_for_account("oa_unknown")
        assert base64.urlsafe_b64decode(new_key)

    def test_azure_needs_endpoint_and_version_and_maps_deployments(self) -> None:
        team_id = _team()
        with session_scope() as session, pytest.raises(InvalidRequest) as caught:
            team_credentials.put(
                session, team_id, "azure_openai", "k" * 20, {"endpoint": "https://x"}
            )
        assert caught.value.param == "api_version"
        azure = AzureCredentials(
            endpoint="https://res.openai.azure.com",
            api_key="k" * 20,
            api_version="2024-10-21",
            deployments=(("gpt-4o-mini", "mini-prod"),),
        )
        provider = AzureOpenAIProvider(azure, timeout=5, max_retries=0)
        body = {"model": "gpt-4o-mini", "messages": [], "temperature": 0}
        assert provider._chat_params(body)["model"] == "mini-prod"
        assert provider._chat_params({**body, "model": "ft:x"})["model"] == "ft:x"
        assert azure.account.startswith("az_") and utcnow()
