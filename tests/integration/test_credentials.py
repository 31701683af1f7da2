"""Per-team provider credentials: OpenAI-compatible and Azure OpenAI, write-only keys,
ciphertext at rest, jobs and inference through the team's own upstream, and no secret in
any log or response (reliability.md B6.14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import CHAT_EXAMPLES
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_auth_and_isolation import assert_openai_error
from tests.integration.test_keys_and_audit import audit_rows, call

TERMINAL = ("succeeded", "failed", "cancelled")
OPENAI_SECRET = "sk-teamsecret-OPENAI-4f9d2c7a1b3e5d6f"
AZURE_SECRET = "azkey0c8b5e1f7a9d3c2b4e6f8a0c1d2e3f4"


def stored_credentials(stack: Stack, team_id: str) -> list[dict[str, Any]]:
    def query(session: Any) -> list[dict[str, Any]]:
        from sqlmodel import select

        from service.providers.credentials import ProviderCredential

        rows = session.exec(select(ProviderCredential).where(ProviderCredential.team_id == team_id))
        return [r.model_dump() for r in rows]

    return stack.db(query)


def run_job(stack: Stack, key: str, dataset: Path, suffix: str) -> Any:
    client = stack.client(key)
    with dataset.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=uploaded.id, suffix=suffix
    )
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j,
        timeout=90,
        what=f"job {job.id} to finish",
    )
    assert done.status == "succeeded", done.error
    return done


def job_account(stack: Stack, job_id: str) -> str:
    def query(session: Any) -> str:
        from service.jobs.models import FineTuningJob

        return str(session.get(FineTuningJob, job_id).account)

    return stack.db(query)


def test_openai_and_azure_credentials_route_jobs_and_never_leak(
    stack: Stack, team: Team, other_team: Team, dataset: Path
) -> None:
    responses: list[Any] = []

    def api(method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        status, parsed, _headers = call(stack, method, path, key, body)
        responses.append(parsed)
        return status, parsed

    admin = team.keys["admin"]
    assert api("GET", "/v1/provider_credentials", admin)[0] == 404

    # An OpenAI-compatible base URL (the sandbox) with the team's own key.
    status, shown = api(
        "PUT",
        "/v1/provider_credentials",
        admin,
        {
            "provider": "openai",
            "api_key": OPENAI_SECRET,
            "base_url": f"{stack.sandbox_url}/v1",
            "organization": "org-team",
        },
    )
    assert status == 200, shown
    assert shown["provider"] == "openai" and shown["organization"] == "org-team"
    assert shown["api_key_hint"] == "…" + OPENAI_SECRET[-4:] and "api_key" not in shown
    status, read = api("GET", "/v1/provider_credentials", admin)
    assert status == 200 and read == shown

    # Admin only; and refusals with bad input do not echo the key.
    for role in ("member", "viewer"):
        status, body = api("GET", "/v1/provider_credentials", team.keys[role])
        assert status == 403
        assert_openai_error(body, type_="permission_error")
    status, body = api(
        "PUT",
        "/v1/provider_credentials",
        admin,
        {"provider": "azure_openai", "api_key": OPENAI_SECRET, "endpoint": "not a url"},
    )
    assert status == 400
    assert_openai_error(body)

    # At rest: ciphertext only, decryptable with the deployment's keys.
    (row,) = stored_credentials(stack, team.id)
    assert OPENAI_SECRET not in json.dumps(row, default=str)
    assert row["secret_ciphertext"].startswith("gAAAA")  # a Fernet token

    def decrypt(session: Any) -> str:
        from service import crypto

        return crypto.decrypt(row["secret_ciphertext"])

    assert stack.db(decrypt) == OPENAI_SECRET

    # A job under the team's credentials carries their account, not the default one.
    done = run_job(stack, team.keys["member"], dataset, "own")
    assert job_account(stack, done.id) == row["account"] == shown["account"]

    # Azure OpenAI for the other team, pointed at the sandbox's Azure-style paths.
    other_admin = other_team.keys["admin"]
    status, azure = api(
        "PUT",
        "/v1/provider_credentials",
        other_admin,
        {
            "provider": "azure_openai",
            "api_key": AZURE_SECRET,
            "endpoint": stack.sandbox_url,
            "api_version": "2024-10-21",
            "deployments": {"gpt-4o-mini": "mini-deployment"},
        },
    )
    assert status == 200, azure
    assert azure["endpoint"] == stack.sandbox_url and "api_key" not in azure
    stack.sandbox._call("DELETE", "/sandbox/requests")
    azure_done = run_job(stack, other_team.keys["member"], dataset, "azure")
    assert job_account(stack, azure_done.id) == azure["account"] != shown["account"]
    question, answer = CHAT_EXAMPLES[2]
    reply = stack.client(other_team.keys["member"]).chat.completions.create(
        model=azure_done.fine_tuned_model, messages=[{"role": "user", "content": question}]
    )
    assert reply.choices[0].message.content == answer

    seen = stack.sandbox.requests()
    azure_calls = [r for r in seen if r["path"].startswith("/openai/")]
    paths = {r["path"] for r in azure_calls}
    assert "/openai/files" in paths and "/openai/fine_tuning/jobs" in paths
    assert f"/openai/deployments/{azure_done.fine_tuned_model}/chat/completions" in paths
    assert all("api-version=2024-10-21" in r["query"] for r in azure_calls)
    # The Azure team's job and model never went through the /v1 (OpenAI-style) paths.
    assert not any(
        azure_done.id in (r["ftq_job_id"] or "")
        for r in seen
        if r["path"] == "/v1/fine_tuning/jobs"
    )

    # Delete: the team falls back to the default; the retired row keeps old jobs resolvable.
    status, deleted = api("DELETE", "/v1/provider_credentials", admin)
    assert status == 200 and deleted["deleted"] is True
    assert api("GET", "/v1/provider_credentials", admin)[0] == 404
    assert api("GET", f"/v1/fine_tuning/jobs/{done.id}", team.keys["viewer"])[0] == 200

    # Audited, without the secret.
    actions = [e["action"] for e in audit_rows(stack, team_id=team.id)]
    assert actions.count("provider_credentials.put") == 1
    assert "provider_credentials.delete" in actions

    # No secret in any response or in any process's log (API, worker, beat, sandbox).
    blob = json.dumps(responses, default=str)
    blob += json.dumps(audit_rows(stack, team_id=team.id), default=str)
    blob += json.dumps(audit_rows(stack, team_id=other_team.id), default=str)
    for log_file in sorted((stack.root / "logs").glob("*")):
        blob += log_file.read_text(errors="replace")
    for secret in (OPENAI_SECRET, AZURE_SECRET):
        assert secret not in blob
        assert secret[4:-4] not in blob  # nor a slice of it
