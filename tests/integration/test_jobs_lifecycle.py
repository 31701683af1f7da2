"""The job lifecycle through the SDK: pause, resume, cancel, idempotent creates, models."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.integration.stack import Stack, Team, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


def upload(client: OpenAI, dataset: Path) -> str:
    with dataset.open("rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune").id


def upstream_of(stack: Stack, job_id: str):  # type: ignore[no-untyped-def]
    jobs = stack.sandbox_client().fine_tuning.jobs.list(metadata={"ftq_job_id": job_id}).data
    assert len(jobs) == 1
    return jobs[0]


def test_pause_resume_and_cancel_pass_through(stack: Stack, team: Team, dataset: Path) -> None:
    client = stack.client(team.keys["member"])
    file_id = upload(client, dataset)
    with stack.sandbox.configured(step_seconds=2.0, max_running_seconds=60):
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", timeout=60)

        paused = client.fine_tuning.jobs.pause(job.id)
        assert paused.status == "paused"
        assert upstream_of(stack, job.id).status == "paused"
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.pause(job.id)
        assert caught.value.code == "invalid_job_state"

        resumed = client.fine_tuning.jobs.resume(job.id)
        assert resumed.status in ("queued", "running")
        assert upstream_of(stack, job.id).status in ("queued", "running")

        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.model_extra["stage"] == "tracking"  # propagates upstream via the poller
        done = wait_for(
            lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j,
            timeout=60,
        )
        assert done.status == "cancelled"
        assert upstream_of(stack, job.id).status == "cancelled"
        # Idempotent: cancelling again answers the cancelled job.
        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"

    statuses = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("paused at the team's request" in m for m in statuses)
    assert any("resumed at the team's request" in m for m in statuses)


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(
    stack: Stack, team: Team, dataset: Path
) -> None:
    client = stack.client(team.keys["member"])
    file_id = upload(client, dataset)
    key = f"idem-{uuid.uuid4().hex}"
    headers = {"Idempotency-Key": key}
    first = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=file_id, extra_headers=headers
    )
    again = client.fine_tuning.jobs.with_raw_response.create(
        model="gpt-4o-mini-2024-07-18", training_file=file_id, extra_headers=headers
    )
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.parse().id == first.id
    assert [j.id for j in client.fine_tuning.jobs.list().data] == [first.id]
    with pytest.raises(openai.ConflictError) as caught:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=file_id,
            suffix="other",
            extra_headers=headers,
        )
    assert caught.value.code == "idempotency_key_reused"
    # Another team using the same key string is a different scope entirely.
    # A file upload retried with its key yields one file.
    upload_headers = {"Idempotency-Key": f"up-{uuid.uuid4().hex}"}
    ids = set()
    for _ in range(2):
        with dataset.open("rb") as handle:
            ids.add(
                client.files.create(
                    file=handle, purpose="fine-tune", extra_headers=upload_headers
                ).id
            )
    assert len(ids) == 1
    client.fine_tuning.jobs.cancel(first.id)


def test_models_lists_the_teams_fine_tunes(stack: Stack, team: Team, dataset: Path) -> None:
    client = stack.client(team.keys["member"])
    file_id = upload(client, dataset)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=file_id, suffix="models"
    )
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j, timeout=90
    )
    models = {m.id: m for m in client.models.list().data}
    assert done.fine_tuned_model in models
    assert models[done.fine_tuned_model].owned_by == team.id
    base = models["gpt-4o-mini-2024-07-18"]
    assert base.shutdown_date == "2027-01-14"
    assert models[done.fine_tuned_model].shutdown_date == "2027-01-14"  # follows its base
    assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    reply = client.chat.completions.create(
        model=checkpoints[0].fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": "What is 12 times 12?"}],
    )
    assert reply.choices[0].message.content == "144."
    # The metrics series stays in ftq: a loss curve without asking the provider.
    metrics = [
        e.data
        for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
        if e.type == "metrics"
    ]
    assert metrics and all("train_loss" in m for m in metrics)
    assert done.model_extra.get("cost_usd") is not None and done.model_extra["cost_usd"] > 0
    json.dumps(metrics)


def test_budget_holds_the_estimate_and_usage_reports_the_month(
    stack: Stack, team: Team, dataset: Path
) -> None:
    from tests.integration.test_auth_and_isolation import raw

    admin, member = team.keys["admin"], team.keys["member"]
    client = stack.client(member)
    file_id = upload(client, dataset)
    wait_for(
        lambda: client.files.retrieve(file_id).model_extra["validation"]["status"] == "completed",
        timeout=60,
    )
    status, estimate = raw(
        stack,
        "POST",
        "/v1/fine_tuning/jobs/estimate",
        member,
        body={"model": "gpt-4o-mini-2024-07-18", "training_file": file_id},
    )
    assert status == 200
    cost = estimate["cost_usd"]
    assert cost > 0

    # Members cannot move the budget; admins can.
    status, _ = raw(stack, "PUT", "/v1/budget", member, body={"monthly_budget_usd": 1.0})
    assert status == 403
    status, body = raw(stack, "PUT", "/v1/budget", admin, body={"monthly_budget_usd": cost * 1.5})
    assert status == 200 and body["monthly_budget_usd"] == cost * 1.5

    first = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    assert first.model_extra["estimated_cost_usd"] == cost
    with pytest.raises(openai.APIStatusError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    assert caught.value.status_code == 402
    assert caught.value.code == "budget_exceeded"
    assert f"${cost:.2f}" in caught.value.message and f"${cost * 1.5:.2f}" in caught.value.message
    assert len(client.fine_tuning.jobs.list().data) == 1  # the refused job left nothing behind

    status, usage = raw(stack, "GET", "/v1/usage", member)
    assert status == 200
    assert usage["jobs"] == 1 and usage["reserved_usd"] == pytest.approx(cost)
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(first.id)).status in TERMINAL and j,
        timeout=90,
    )
    status, usage = raw(stack, "GET", "/v1/usage", member)
    assert usage["reserved_usd"] == 0
    assert usage["trained_tokens"] == done.trained_tokens
    assert usage["actual_cost_usd"] == pytest.approx(done.model_extra["cost_usd"])
    assert usage["remaining_usd"] == pytest.approx(
        max(0.0, cost * 1.5 - done.model_extra["cost_usd"])
    )
    status, _ = raw(stack, "GET", "/v1/usage?month=2026-13", member)
    assert status == 400
