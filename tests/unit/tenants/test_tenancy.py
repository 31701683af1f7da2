"""Tenancy logic on SQLite: limits, rate-limit windows, audit redaction, key rotation,
credentials encryption and rotation, and provider resolution by account."""

from __future__ import annotations

import asyncio
import base64
import bisect
import os
import random

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
    """The sliding window, on the in-process log with a controlled clock (the Redis log runs
    the same rules in Lua: tests/integration/test_rate_limit.py)."""

    def test_no_span_of_a_window_accepts_more_than_the_limit(self) -> None:
        log, limit, rng = ratelimit.MemoryLog(), 5, random.Random(7)
        times = sorted(rng.uniform(0, 600) for _ in range(2000))
        accepted = [t for t in times if log.decide("k", limit, t).allowed]
        for t in accepted:  # every span (t - 60, t] that ends at an acceptance
            in_window = bisect.bisect_right(accepted, t) - bisect.bisect_right(accepted, t - 60)
            assert in_window <= limit, t
        # Exact, not merely safe: each refusal had the limit's worth in the window before it.
        refused = sorted(set(times) - set(accepted))
        for t in refused:
            in_window = bisect.bisect_right(accepted, t) - bisect.bisect_right(accepted, t - 60)
            assert in_window == limit, t
        assert len(accepted) >= limit * 9  # 600 s of demand: about one window's worth per 60 s

    def test_a_clock_minute_boundary_gives_no_second_budget(self) -> None:
        # The fixed window this replaces accepted 2 x limit around hh:mm:00.
        log = ratelimit.MemoryLog()
        assert all(log.decide("k", 3, 6000 - 0.5).allowed for _ in range(3))
        assert not log.decide("k", 3, 6000 + 0.5).allowed
        assert log.decide("k", 3, 6000 + 59.5).allowed  # the first three left the window

    def test_counts_per_bucket_and_peek_does_not_count(self) -> None:
        log = ratelimit.MemoryLog()
        assert log.decide("a", 2, 10, peek=True).remaining == 2
        assert log.decide("a", 2, 10).remaining == 1
        assert log.decide("b", 2, 10).remaining == 1
        assert log.decide("a", 2, 11).remaining == 0
        assert not log.decide("a", 2, 12).allowed

    def test_decision_gives_retry_after_until_a_slot_frees(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: object
    ) -> None:
        monkeypatch.delenv("FTQ_BROKER_URL", raising=False)
        reset_settings_cache()
        team, key = f"team-{os.getpid()}", "key-rl"
        assert ratelimit.hit(team, key, 2, now=6000).allowed
        second = ratelimit.hit(team, key, 2, now=6045)
        assert second.remaining == 0 and second.reset_seconds == 60  # the newest leaves at 6105
        refused = ratelimit.hit(team, key, 2, now=6050)
        assert not refused.allowed and refused.retry_after == 10  # the oldest leaves at 6060
        assert not ratelimit.hit(team, key, 2, now=6059.9).allowed
        assert ratelimit.hit(team, key, 2, now=6060).allowed

    def test_a_lowered_limit_waits_for_enough_entries_to_leave(self) -> None:
        log = ratelimit.MemoryLog()
        for t in (0, 10, 20, 30):
            assert log.decide("k", 10, t).allowed
        refused = log.decide("k", 2, 35)  # four in the window, two allowed: 20 must leave
        assert not refused.allowed and refused.wait_seconds == 45

    def test_an_unreachable_redis_lets_requests_through_and_is_left_alone(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FTQ_BROKER_URL", "redis://127.0.0.1:9/0")  # discard: nobody there
        reset_settings_cache()
        monkeypatch.setattr(ratelimit, "_breaker", ratelimit._Breaker())
        try:
            first = ratelimit.hit("t", "k", 1)
            assert first.allowed and not first.counted
            assert ratelimit._breaker.is_open()  # the next calls skip Redis for a while
            assert ratelimit.hit("t", "k", 1).allowed
            monkeypatch.setattr(ratelimit, "_breaker", ratelimit._Breaker())
            from_loop = asyncio.run(ratelimit.adecide("t:k", 1))  # the pre-check's path
            assert from_loop.allowed and not from_loop.counted and ratelimit._breaker.is_open()
        finally:
            reset_settings_cache()


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
