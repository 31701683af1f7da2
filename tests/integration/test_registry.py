"""The model registry on the shared stack, through the openai SDK and raw HTTP: a sandbox
(OpenAI-shaped) fine-tune's lineage and shutdown date, the registry filters, a one-call
re-train on the sandbox's Azure paths with the parent's eval compared on both models, the
migration plan, shutdown alerts sent once each on a clock the test sets, and a retired
model's error naming its successor."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.conftest import write_chat_dataset
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_auth_and_isolation import assert_openai_error
from tests.integration.test_evals_gate import PARAPHRASED, upload
from tests.integration.test_keys_and_audit import call

BASE = "gpt-4o-mini-2024-07-18"
AZURE_KEY = "azkey-registry-0c8b5e1f7a9d3c2b4e6f8a0c"


def _recorded(stack: Stack, key: str, job_id: str) -> dict[str, Any] | None:
    body: Any = stack.client(key).get(f"/fine_tuning/jobs/{job_id}/evaluation", cast_to=object)
    return body["evaluation"] if body["status"] == "recorded" else None


def _model(stack: Stack, key: str, model: str) -> dict[str, Any]:
    status, body, _ = call(stack, "GET", f"/v1/models/{model}", key)
    assert status == 200, body
    return body


def _notices(stack: Stack, team_id: str) -> list[tuple[str, str, int]]:
    def query(session: Any) -> list[tuple[str, str, int]]:
        from sqlmodel import select

        from service.webhooks.outbox import OutboxEvent

        rows = session.exec(
            select(OutboxEvent)
            .where(OutboxEvent.team_id == team_id, OutboxEvent.event_type.startswith("model."))  # type: ignore[attr-defined]
            .order_by(OutboxEvent.pk)  # type: ignore[arg-type]
        )
        return [(r.event_type, r.object_id, r.sequence) for r in rows]

    return stack.db(query)


def _send_alerts(stack: Stack, team_id: str, day: str) -> dict[str, int]:
    from service.registry import alerts

    now = dt.datetime.fromisoformat(f"{day}T12:00:00+00:00")
    return stack.db(lambda _: alerts.send_due_alerts(now=now, team_id=team_id))


def test_lineage_retrain_on_azure_alerts_and_retirement(
    stack: Stack, team: Team, other_team: Team, tmp_path: Path
) -> None:
    key, admin = team.keys["member"], team.keys["admin"]
    client = stack.client(key)
    train_path = write_chat_dataset(tmp_path / "train.jsonl")
    training = upload(client, train_path)
    held_out = upload(client, write_chat_dataset(tmp_path / "held.jsonl", PARAPHRASED))
    template: Any = client.post(
        "/evals/templates",
        cast_to=object,
        body={"template": "question_answering", "file_id": held_out},
    )
    gate = {"eval_id": template["id"], "gate": {"criterion": "exact_match", "min_delta": 0.0}}
    parent = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=training,
        validation_file=held_out,
        suffix="orig",
        hyperparameters={"n_epochs": 3},
        extra_body={"evaluation": gate},
    )
    wait_for(lambda: _recorded(stack, key, parent.id), timeout=180, what="parent's gate")
    parent = client.fine_tuning.jobs.retrieve(parent.id)
    assert parent.fine_tuned_model

    # Lineage: job, provider and account, base, method, files with sha256, shutdown date.
    entry = _model(stack, key, parent.fine_tuned_model)
    assert entry["shutdown_date"] == "2027-01-14" and entry["retired"] is False
    assert entry["provider"] == "openai" and entry["provider_kind"] == "openai_compatible"
    lineage = entry["lineage"]
    assert lineage["fine_tuning_job_id"] == parent.id and lineage["base_model"] == BASE
    assert lineage["training_file"]["sha256"] == hashlib.sha256(train_path.read_bytes()).hexdigest()
    assert lineage["validation_file"]["id"] == held_out
    assert lineage["method"]["type"] == "supervised"
    assert lineage["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3
    assert lineage["trained_tokens"] and lineage["account"]
    assert lineage["evaluation"]["verdict"] in ("promoted", "rejected")
    assert lineage["parent"] is None and lineage["successors"] == []
    sdk_entry = client.models.retrieve(parent.fine_tuned_model)
    assert (sdk_entry.model_extra or {})["lineage"]["fine_tuning_job_id"] == parent.id

    # Filters (ftq query extensions).
    def listed(**query: str) -> list[str]:
        page = client.models.list(extra_query=query)
        return [m.id for m in page.data]

    assert parent.fine_tuned_model in listed(shuts_down_before="2027-02-01")
    assert parent.fine_tuned_model not in listed(shuts_down_before="2027-01-14")
    assert parent.fine_tuned_model in listed(base_model=BASE, provider="openai")
    assert parent.fine_tuned_model not in listed(provider="local")
    status, body, _ = call(stack, "GET", "/v1/models?shuts_down_before=soon", key)
    assert status == 400 and assert_openai_error(body)["param"] == "shuts_down_before"

    # The migration plan sees it (it shuts down within 60 days of today, 2026-11-30).
    status, plan, _ = call(stack, "GET", "/v1/migration_plan?within_days=60", key)
    assert status == 200, plan
    item = next(i for i in plan["data"] if i["model"] == parent.fine_tuned_model)
    assert item["status"] == "pending" and item["shutdown_date"] == "2027-01-14"
    status, body, _ = call(stack, "GET", "/v1/migration_plan?within_days=-1", key)
    assert status == 400 and assert_openai_error(body)["param"] == "within_days"

    # Another team: the model, its retrain and its plan are not there.
    foreign = other_team.keys["member"]
    assert call(stack, "GET", f"/v1/models/{parent.fine_tuned_model}", foreign)[0] == 404
    status, body, _ = call(
        stack, "POST", "/v1/fine_tuning/jobs", foreign, {"model": BASE, "retrain_of": parent.id}
    )
    assert status == 400 and assert_openai_error(body)["code"] == "retrain_source_not_found"
    status, foreign_plan, _ = call(stack, "GET", "/v1/migration_plan?within_days=3650", foreign)
    assert status == 200 and foreign_plan["data"] == []

    # Re-train in one call on the team's Azure OpenAI (the sandbox's Azure paths): no
    # training_file — the parent's files, method, seed and eval gate are replayed.
    status, azure, _ = call(
        stack,
        "PUT",
        "/v1/provider_credentials",
        admin,
        {
            "provider": "azure_openai",
            "api_key": AZURE_KEY,
            "endpoint": stack.sandbox_url,
            "api_version": "2024-10-21",
        },
    )
    assert status == 200, azure
    # The estimate of a re-train prices the parent's data, as its create will run it.
    status, estimate, _ = call(
        stack,
        "POST",
        "/v1/fine_tuning/jobs/estimate",
        key,
        {"model": BASE, "retrain_of": parent.fine_tuned_model},
    )
    assert status == 200, estimate
    assert estimate["training_file"] == training and estimate["n_epochs"] == 3
    status, body, _ = call(
        stack,
        "POST",
        "/v1/fine_tuning/jobs/estimate",
        foreign,
        {"model": BASE, "retrain_of": parent.fine_tuned_model},
    )
    assert status == 400 and assert_openai_error(body)["code"] == "retrain_source_not_found"
    status, child, _ = call(
        stack,
        "POST",
        "/v1/fine_tuning/jobs",
        key,
        {"model": BASE, "retrain_of": parent.fine_tuned_model, "suffix": "azure"},
    )
    assert status == 200, child
    assert child["provider"] == "azure_openai" and child["training_file"] == training
    assert child["validation_file"] == held_out and child["seed"] == parent.seed
    assert child["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3
    wait_for(lambda: _recorded(stack, key, child["id"]), timeout=180, what="child's gate")
    child_job = client.fine_tuning.jobs.retrieve(child["id"])
    assert child_job.status == "succeeded" and child_job.fine_tuned_model

    child_entry = _model(stack, key, child_job.fine_tuned_model)
    assert child_entry["parent"]["fine_tuning_job_id"] == parent.id
    assert child_entry["provider"] == "azure_openai"
    comparison = child_entry["lineage"]["comparison_with_parent"]
    assert comparison["parent_model"] == parent.fine_tuned_model
    assert comparison["items"] == len(PARAPHRASED) and comparison["eval_id"] == template["id"]
    interval = comparison["confidence_interval"]
    assert interval["low"] <= comparison["delta"] <= interval["high"]
    assert comparison["outcome"] in ("better", "worse", "no_significant_difference")
    successors = _model(stack, key, parent.fine_tuned_model)["lineage"]["successors"]
    assert [s["fine_tuning_job_id"] for s in successors] == [child["id"]]
    status, plan, _ = call(stack, "GET", "/v1/migration_plan?within_days=60", key)
    item = next(i for i in plan["data"] if i["model"] == parent.fine_tuned_model)
    assert (
        item["status"] == "migrated" and item["successors"][0]["id"] == child_job.fine_tuned_model
    )

    # Shutdown alerts on a clock the test sets: 30, 7 and 1 days before, then retired —
    # each once, however often the task runs.
    def parent_notices() -> list[tuple[str, int]]:
        return [(t, s) for t, o, s in _notices(stack, team.id) if o == parent.id]

    def payloads() -> list[dict[str, Any]]:
        def query(session: Any) -> list[dict[str, Any]]:
            from sqlmodel import select

            from service.webhooks.outbox import OutboxEvent

            rows = session.exec(
                select(OutboxEvent).where(
                    OutboxEvent.team_id == team.id, OutboxEvent.object_id == parent.id
                )
            )
            return [r.payload for r in rows if r.event_type.startswith("model.")]

        return stack.db(query)

    assert _send_alerts(stack, team.id, "2026-12-01") == {}
    _send_alerts(stack, team.id, "2026-12-16")
    _send_alerts(stack, team.id, "2026-12-16")
    assert parent_notices() == [("model.shutdown_approaching", 30)]
    # The event's data is the documented wire object (/openapi.json webhooks).
    from service.registry.wire import ModelNoticeObject

    (notice,) = [ModelNoticeObject.model_validate(p) for p in payloads()]
    assert (notice.id, notice.days_left, notice.threshold_days) == (
        parent.fine_tuned_model,
        29,
        30,
    )
    assert notice.successors[0]["fine_tuning_job_id"] == child["id"]
    _send_alerts(stack, team.id, "2027-01-08")
    _send_alerts(stack, team.id, "2027-01-13")
    _send_alerts(stack, team.id, "2027-01-13")
    assert parent_notices() == [
        ("model.shutdown_approaching", 30),
        ("model.shutdown_approaching", 7),
        ("model.shutdown_approaching", 1),
    ]
    _send_alerts(stack, team.id, "2027-01-14")
    _send_alerts(stack, team.id, "2027-01-20")
    assert parent_notices()[-1] == ("model.retired", 0) and len(parent_notices()) == 4

    # The retired model answers a clear error naming its successor.
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model=parent.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model_retired"
    assert child_job.fine_tuned_model in caught.value.message
    assert "2027-01-14" in caught.value.message
    assert _model(stack, key, parent.fine_tuned_model)["retired"] is True
