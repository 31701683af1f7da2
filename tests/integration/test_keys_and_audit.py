"""API keys (create once, list, revoke, rotate with grace), operator-only tenants, and the
audit trail every one of those actions leaves (reliability.md B6.14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.integration.stack import Stack, Team
from tests.integration.test_auth_and_isolation import assert_openai_error


def call(
    stack: Stack,
    method: str,
    path: str,
    key: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed body, headers) of one raw request to the API."""
    all_headers = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        all_headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        stack.api_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers=all_headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            raw, status, got = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw, status, got = error.read(), error.code, dict(error.headers)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, {k.lower(): v for k, v in got.items()}


def audit_rows(stack: Stack, **where: Any) -> list[dict[str, Any]]:
    def query(session: Any) -> list[dict[str, Any]]:
        from sqlmodel import select

        from service.tenants.models import AuditEvent

        statement = select(AuditEvent).order_by(AuditEvent.pk)  # type: ignore[arg-type]
        for name, value in where.items():
            statement = statement.where(getattr(AuditEvent, name) == value)
        return [row.model_dump() for row in session.exec(statement)]

    return stack.db(query)


def operator_key(stack: Stack) -> str:
    """An operator key made the way an operator would: ``ftq admin create-key --operator``."""
    out = subprocess.run(
        [sys.executable, "-m", "cli", "admin", "create-key", "--operator", "--json"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    created = json.loads(out.stdout.strip().splitlines()[-1])
    assert created["role"] == "operator"
    return str(created["key"])


def test_key_lifecycle_is_admin_only_and_audited(stack: Stack, team: Team) -> None:
    admin = team.keys["admin"]

    # Create: the plaintext once; the database holds only a hash and the display prefix.
    status, created, headers = call(
        stack, "POST", "/v1/api_keys", admin, {"name": "ci", "role": "member"}
    )
    assert status == 200, created
    token = created["key"]
    assert token.startswith("ftq_sk_") and created["prefix"] == token[: len(created["prefix"])]
    request_id = headers["x-request-id"]

    def stored(session: Any) -> dict[str, Any]:
        from service.tenants.models import ApiKey

        return session.get(ApiKey, created["id"]).model_dump()

    row = stack.db(stored)
    assert token not in json.dumps(row, default=str) and row["key_hash"] != token

    status, listed, _ = call(stack, "GET", "/v1/api_keys", admin)
    assert status == 200
    mine = next(k for k in listed["data"] if k["id"] == created["id"])
    assert "key" not in mine and mine["revoked"] is False and mine["role"] == "member"
    assert set(mine) >= {"id", "prefix", "name", "role", "created_at", "last_used_at", "revoked"}

    # The new key works (and its first use from this address is noted).
    assert stack.client(token).fine_tuning.jobs.list().data == []

    # Rotate without grace: the new key works, the old one stops at once.
    status, rotated, _ = call(stack, "POST", f"/v1/api_keys/{created['id']}/rotate", admin, {})
    assert status == 200 and rotated["id"] != created["id"] and rotated["role"] == "member"
    with pytest.raises(openai.AuthenticationError) as caught:
        stack.client(token).fine_tuning.jobs.list()
    assert caught.value.code == "revoked_api_key"
    assert stack.client(rotated["key"]).fine_tuning.jobs.list().data == []

    # Rotate with grace: both work until revoked explicitly.
    status, graced, _ = call(
        stack, "POST", f"/v1/api_keys/{rotated['id']}/rotate", admin, {"grace_seconds": 600}
    )
    assert status == 200
    assert stack.client(rotated["key"]).fine_tuning.jobs.list().data == []
    assert stack.client(graced["key"]).fine_tuning.jobs.list().data == []
    status, revoked, _ = call(stack, "POST", f"/v1/api_keys/{rotated['id']}/revoke", admin)
    assert status == 200 and revoked["revoked"] is True
    with pytest.raises(openai.AuthenticationError):
        stack.client(rotated["key"]).fine_tuning.jobs.list()

    # Members and viewers: 403 in OpenAI's shape, and the refusal is audited.
    for role in ("member", "viewer"):
        status, body, _ = call(stack, "GET", "/v1/api_keys", team.keys[role])
        assert status == 403
        assert_openai_error(body, type_="permission_error")
    denied = audit_rows(stack, team_id=team.id, action="access.denied")
    assert {d["actor_key_id"] for d in denied} == {team.key_ids["member"], team.key_ids["viewer"]}

    # Audit: create, rotate and revoke, each with actor, request id, address and target.
    events = audit_rows(stack, team_id=team.id)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_action.setdefault(event["action"], []).append(event)
    create = next(e for e in by_action["api_key.create"] if e["target_id"] == created["id"])
    assert create["actor_key_id"] == team.key_ids["admin"]
    assert create["request_id"] == request_id and create["ip"] == "127.0.0.1"
    assert len(by_action["api_key.rotate"]) == 2
    assert any(e["target_id"] == rotated["id"] for e in by_action["api_key.revoke"])
    assert any(e["actor_key_id"] == created["id"] for e in by_action["api_key.new_address"])
    assert token not in json.dumps(events, default=str)

    # A refused key is audited with its display prefix, never the key.
    failures = audit_rows(stack, action="auth.failed", actor_key_id=created["id"])
    assert failures and failures[-1]["team_id"] == team.id
    assert failures[-1]["details"]["key_prefix"] == created["prefix"]
    assert token not in json.dumps(failures, default=str)


def test_audit_events_api_filters_and_pages(stack: Stack, team: Team) -> None:
    admin = team.keys["admin"]
    for index in range(3):
        assert call(stack, "POST", "/v1/api_keys", admin, {"name": f"k{index}"})[0] == 200

    status, page1, _ = call(stack, "GET", "/v1/audit_events?action=api_key.create&limit=2", admin)
    assert status == 200 and len(page1["data"]) == 2 and page1["has_more"] is True
    status, page2, _ = call(
        stack,
        "GET",
        f"/v1/audit_events?action=api_key.create&limit=100&after={page1['last_id']}",
        admin,
    )
    assert status == 200
    ids = [e["id"] for e in page1["data"] + page2["data"]]
    assert len(ids) == len(set(ids)) == 6  # the stack's three keys and these three
    assert all(e["action"] == "api_key.create" for e in page1["data"] + page2["data"])
    newest = page1["data"][0]
    assert newest["details"]["name"] == "k2" and newest["team_id"] == team.id

    status, window, _ = call(
        stack, "GET", f"/v1/audit_events?since={newest['created_at'] + 3600}", admin
    )
    assert status == 200 and window["data"] == []
    status, by_target, _ = call(
        stack, "GET", f"/v1/audit_events?target_id={newest['target_id']}", admin
    )
    assert [e["id"] for e in by_target["data"]] == [newest["id"]]

    # Only admins read the log; another team's admin sees none of these events.
    assert call(stack, "GET", "/v1/audit_events", team.keys["member"])[0] == 403


def test_operators_manage_teams_and_team_keys_cannot(stack: Stack, team: Team) -> None:
    operator = operator_key(stack)

    status, created, _ = call(stack, "POST", "/v1/tenants", operator, {"name": f"{team.name}-x"})
    assert status == 200, created
    assert created["limits"]["max_active_jobs"] >= 1
    status, first_key, _ = call(
        stack, "POST", f"/v1/tenants/{created['id']}/api_keys", operator, {"name": "first"}
    )
    assert status == 200 and first_key["role"] == "admin"
    status, keys, _ = call(stack, "GET", "/v1/api_keys", first_key["key"])
    assert status == 200 and [k["id"] for k in keys["data"]] == [first_key["id"]]

    status, patched, _ = call(
        stack,
        "PATCH",
        f"/v1/tenants/{created['id']}",
        operator,
        {"limits": {"max_active_jobs": 1, "max_files": 5}},
    )
    assert status == 200
    assert patched["limits"]["max_active_jobs"] == 1
    assert patched["limits"]["overrides"] == {"max_active_jobs": 1, "max_files": 5}
    status, listed, _ = call(stack, "GET", "/v1/tenants?limit=100", operator)
    assert status == 200 and created["id"] in {t["id"] for t in listed["data"]}
    assert "platform" not in {t["name"] for t in listed["data"]}

    # Team keys, even admin ones, are refused there; operator keys are refused in teams.
    for role in ("admin", "member", "viewer"):
        status, body, _ = call(stack, "GET", "/v1/tenants", team.keys[role])
        assert status == 403, (role, body)
    assert call(stack, "GET", "/v1/files", operator)[0] == 403
    assert call(stack, "GET", "/v1/tenants/team_doesnotexist00", operator)[0] == 404

    # The new team's log shows what the operator did to it, with the operator's key.
    events = [
        e for e in audit_rows(stack, team_id=created["id"]) if e["action"] != "api_key.new_address"
    ]
    actions = [e["action"] for e in events]
    assert actions[:3] == ["team.create", "api_key.create", "team.limits_update"]
    operator_id = events[0]["actor_key_id"]
    assert operator_id and all(e["actor_key_id"] == operator_id for e in events[:3])


def _ftq_admin(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "admin", *args],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_admin_cli_shows_key_ids_and_lists_keys_and_teams(stack: Stack, team: Team) -> None:
    created = _ftq_admin(stack, "create-key", "--team", team.name, "--role", "viewer")
    token = created.stdout.strip()
    assert token.startswith("ftq_sk_") and "\n" not in token  # stdout: the secret alone
    key_id = created.stderr.split("key id ", 1)[1].split()[0]
    assert key_id.startswith("key_")

    listed = [
        json.loads(line)
        for line in _ftq_admin(stack, "list-keys", "--team", team.id, "--json").stdout.splitlines()
    ]
    by_id = {k["id"]: k for k in listed}
    assert key_id in by_id and set(team.key_ids.values()) <= set(by_id)
    assert by_id[key_id]["role"] == "viewer" and token.startswith(by_id[key_id]["prefix"])
    assert all("key" not in k or k["key"] is None for k in listed)
    assert token not in json.dumps(listed)

    _ftq_admin(stack, "revoke-key", "--team", team.id, key_id)
    table = _ftq_admin(stack, "list-keys", "--team", team.name).stdout
    assert key_id not in table and team.key_ids["admin"] in table
    assert key_id in _ftq_admin(stack, "list-keys", "--team", team.name, "--all").stdout

    teams = [
        json.loads(line) for line in _ftq_admin(stack, "list-teams", "--json").stdout.splitlines()
    ]
    assert {"id": team.id, "name": team.name} in [{"id": t["id"], "name": t["name"]} for t in teams]
    assert team.name in _ftq_admin(stack, "list-teams").stdout
