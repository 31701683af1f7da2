"""Noisy neighbour (reliability.md B6.15): one team floods job creation and uploads an
oversized dataset while another works normally. The flooder gets 429 (active-job quota,
then its key's rate limit, with Retry-After) and 413; its upstream creates stop at its
quota; the other team's job completes and none of its calls is refused. Operators see both
teams in /metrics; /readyz checks the database and the broker."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_keys_and_audit import call

TERMINAL = ("succeeded", "failed", "cancelled")
FLOODER_RPM = 40
FLOODER_ACTIVE_JOBS = 2


def test_flooder_is_limited_and_the_other_team_proceeds(
    stack: Stack, team: Team, other_team: Team, dataset: Path, tmp_path: Path
) -> None:
    flooder, calm = other_team, team

    def limit(session: object) -> None:
        from service.tenants import limits

        limits.set_overrides(
            session,  # type: ignore[arg-type]
            flooder.id,
            {"requests_per_minute": FLOODER_RPM, "max_active_jobs": FLOODER_ACTIVE_JOBS},
        )

    stack.db(limit)

    # The flooder's oversized upload: 413 (the deployment's per-file limit in this stack).
    big = tmp_path / "big.jsonl"
    line = b'{"messages": [{"role": "user", "content": "' + b"x" * 1000 + b'"}]}\n'
    big.write_bytes(line * (3 * 1024))  # ~3 MB > the shared stack's 2 MB
    request = urllib.request.Request(
        f"{stack.api_url}/v1/files",
        data=b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + big.read_bytes() + b"\r\n--b--\r\n",
        method="POST",
        headers={
            "authorization": f"Bearer {flooder.keys['admin']}",
            "content-type": "multipart/form-data; boundary=b",
        },
    )
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("an oversized upload was accepted")
    except urllib.error.HTTPError as error:
        assert error.code == 413

    flood_client = stack.client(flooder.keys["member"])
    with dataset.open("rb") as handle:
        flood_file = flood_client.files.create(file=handle, purpose="fine-tune").id
    calm_client = stack.client(calm.keys["member"])
    with dataset.open("rb") as handle:
        calm_file = calm_client.files.create(file=handle, purpose="fine-tune").id

    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": flood_file}

    def flood(_index: int) -> tuple[int, dict[str, object], dict[str, str]]:
        return call(stack, "POST", "/v1/fine_tuning/jobs", flooder.keys["member"], body)

    calm_latencies: list[float] = []

    def calm_work() -> str:
        started = time.perf_counter()
        job = calm_client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=calm_file, suffix="calm"
        )
        calm_latencies.append(time.perf_counter() - started)
        for _ in range(10):
            started = time.perf_counter()
            calm_client.fine_tuning.jobs.retrieve(job.id)
            calm_latencies.append(time.perf_counter() - started)
        return job.id

    with ThreadPoolExecutor(max_workers=9) as pool:
        calm_future = pool.submit(calm_work)
        results = list(pool.map(flood, range(60)))
        calm_job = calm_future.result()

    statuses = [status for status, _body, _headers in results]
    created = [b for s, b, _h in results if s == 200]
    quota = [b for s, b, _h in results if s == 429 and b["error"]["code"] == "quota_exceeded"]  # type: ignore[index]
    throttled = [
        (b, h) for s, b, h in results if s == 429 and b["error"]["code"] != "quota_exceeded"
    ]  # type: ignore[index]
    assert set(statuses) <= {200, 429}, statuses
    assert len(created) == FLOODER_ACTIVE_JOBS
    assert quota and f"may run {FLOODER_ACTIVE_JOBS} at once" in quota[0]["error"]["message"]  # type: ignore[index]
    assert throttled, "the key's per-minute rate limit never answered"
    for error_body, headers in throttled:
        assert error_body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert 1 <= int(headers["retry-after"]) <= 60
    # The flooder's key stays throttled; another of its keys is counted separately.
    assert call(stack, "GET", "/v1/files", flooder.keys["member"])[0] == 429
    assert call(stack, "GET", "/v1/files", flooder.keys["viewer"])[0] == 200

    # The calm team: never refused, quick answers, and its job completes.
    assert max(calm_latencies) < 5.0, calm_latencies
    done = wait_for(
        lambda: (j := calm_client.fine_tuning.jobs.retrieve(calm_job)).status in TERMINAL and j,
        timeout=90,
        what="the calm team's job",
    )
    assert done.status == "succeeded", done.error

    # Upstream creates for the flooder stop at its quota.
    flood_ids = {str(b["id"]) for b in created}
    creates = stack.sandbox.stats()["creates_by_ftq_job_id"]
    assert sum(creates.get(job_id, 0) for job_id in flood_ids) <= FLOODER_ACTIVE_JOBS
    assert creates.get(calm_job) == 1

    # Operators see the fleet: jobs by status, provider and team; upstream calls; queues.
    with urllib.request.urlopen(f"{stack.api_url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'ftq_jobs{{provider="openai",status="succeeded",team="{calm.id}"}}' in metrics
    assert f'team="{flooder.id}"' in metrics
    assert (
        'ftq_upstream_requests_total{operation="jobs.create",outcome="ok",provider="openai"}'
        in metrics
    )
    assert 'ftq_queue_depth{queue="ftq"}' in metrics
    assert "ftq_files{validation_status=" in metrics
    assert "# TYPE ftq_webhook_deliveries gauge" in metrics

    # Both teams' mutations are in the audit log, written with the actions themselves.
    def actions(session: object) -> set[tuple[str | None, str]]:
        from sqlmodel import select

        from service.tenants.models import AuditEvent

        rows = session.exec(select(AuditEvent.team_id, AuditEvent.action))  # type: ignore[attr-defined]
        return set(rows)

    logged = stack.db(actions)
    for team_id in (calm.id, flooder.id):
        assert {(team_id, "file.create"), (team_id, "job.create")} <= logged
    with urllib.request.urlopen(f"{stack.api_url}/readyz", timeout=10) as response:
        ready = response.read().decode()
    assert '"database":"ok"' in ready.replace(" ", "") and '"broker":"ok"' in ready.replace(" ", "")
