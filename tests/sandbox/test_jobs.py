"""Fine-tuning jobs through the SDK: create, list, lifecycle, events, control."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import openai
import pytest

from tests.sandbox.conftest import QA, Sandbox, chat_jsonl, wait_for_status

FT_NAME = re.compile(r"^ft:gpt-4o-mini-2024-07-18:sandbox:quiz:[A-Za-z0-9]{8}$")


def _upload(client: openai.OpenAI, content: bytes, name: str = "data.jsonl") -> str:
    return client.files.create(file=(name, content), purpose="fine-tune").id


def test_create_returns_full_job_object(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        metadata={"team": "a", "ftq_job_id": "create-shape"},
    )
    assert re.fullmatch(r"ftjob-[A-Za-z0-9]{24}", job.id)
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.model == "gpt-4o-mini-2024-07-18"  # aliases resolve to the snapshot
    assert job.organization_id == "org-sandbox"
    assert job.fine_tuned_model is None and job.finished_at is None and job.error is None
    assert job.hyperparameters.n_epochs == 2
    assert job.hyperparameters.batch_size == 1
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(1.8)
    assert job.method is not None and job.method.type == "supervised"
    assert job.method.supervised is not None
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.metadata == {"team": "a", "ftq_job_id": "create-shape"}
    assert isinstance(job.seed, int)
    assert job.result_files == [] and job.trained_tokens is None
    client.fine_tuning.jobs.cancel(job.id)


def test_auto_epochs_follow_cookbook_rule(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=training_file, seed=7)
    # 12 examples: 12 * 3 < 100, so n_epochs = min(25, 100 // 12) = 8
    assert job.hyperparameters.n_epochs == 8
    assert job.seed == 7
    client.fine_tuning.jobs.cancel(job.id)


def test_list_newest_first_with_metadata_filter_and_paging(
    client: openai.OpenAI, training_file: str
) -> None:
    ids = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=training_file,
            metadata={"batch": "listing", "n": str(i)},
        ).id
        for i in range(3)
    ]
    page = client.fine_tuning.jobs.list(metadata={"batch": "listing"}, limit=2)
    assert [j.id for j in page.data] == [ids[2], ids[1]]
    assert page.has_more is True
    rest = client.fine_tuning.jobs.list(metadata={"batch": "listing"}, limit=2, after=ids[1])
    assert [j.id for j in rest.data] == [ids[0]]
    assert rest.has_more is False
    # Auto-pagination must terminate and see each job once.
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"batch": "listing"}, limit=1)] == [
        ids[2],
        ids[1],
        ids[0],
    ]
    only = client.fine_tuning.jobs.list(metadata={"batch": "listing", "n": "1"})
    assert [j.id for j in only.data] == [ids[1]]
    assert client.fine_tuning.jobs.list(metadata={"batch": "nope"}).data == []
    for job_id in ids:
        client.fine_tuning.jobs.cancel(job_id)


def test_lifecycle_to_succeeded(client: openai.OpenAI, trained_job: Any) -> None:
    job = trained_job
    assert job.status == "succeeded"
    assert FT_NAME.match(job.fine_tuned_model), job.fine_tuned_model
    assert job.finished_at is not None and job.finished_at >= job.created_at
    assert job.estimated_finish is None
    # 12 examples * (1 system + 1 user + 1 assistant message) tokens, times 8 epochs.
    per_epoch = sum(
        len("You are a terse quiz bot.") // 4 + 1 + len(q) // 4 + 1 + len(a) // 4 + 1 for q, a in QA
    )
    assert job.trained_tokens == per_epoch * 8

    # The result file is a CSV of per-step metrics with a falling loss.
    [result_id] = job.result_files
    result = client.files.retrieve(result_id)
    assert result.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_id).text)))
    assert list(rows[0]) == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    ]
    total_steps = 8 * 3  # 8 epochs, steps per epoch capped at 3
    assert [int(r["step"]) for r in rows] == list(range(1, total_steps + 1))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) / 3

    # The model is listed, owned by the organization.
    listed = {m.id: m for m in client.models.list()}
    assert listed[job.fine_tuned_model].owned_by == "sandbox"
    assert listed[job.fine_tuned_model].shutdown_date == "2027-01-14"


def test_events_newest_first_and_after_paging(client: openai.OpenAI, trained_job: Any) -> None:
    first = client.fine_tuning.jobs.list_events(trained_job.id)
    assert len(first.data) == 20 and first.has_more is True
    assert first.data[0].message == "The job has successfully completed"
    assert first.data[1].message == f"New fine-tuned model created: {trained_job.fine_tuned_model}"

    events = list(client.fine_tuning.jobs.list_events(trained_job.id, limit=7))
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)) and all(i.startswith("ftevent-") for i in ids)
    assert ids[:20] == [e.id for e in first.data]
    assert events[-1].message == f"Created fine-tuning job: {trained_job.id}"
    created = [e.created_at for e in events]
    assert created == sorted(created, reverse=True)

    # Paging from a cursor returns exactly the older events.
    page = client.fine_tuning.jobs.list_events(trained_job.id, after=ids[4], limit=3)
    assert [e.id for e in page.data] == ids[5:8]
    # Ids are stable across reads.
    again = client.fine_tuning.jobs.list_events(trained_job.id, limit=100)
    assert [e.id for e in again.data] == ids and again.has_more is False

    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 24
    last = metrics[0]
    assert last.message.startswith("Step 24/24: training loss=")
    assert last.data is not None
    assert set(last.data) == {
        "step",
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "total_steps",
    }
    assert last.data["step"] == 24 and last.data["total_steps"] == 24
    assert [e.message for e in events].index("Fine-tuning job started") > 24


def test_checkpoints_for_last_three_epochs(client: openai.OpenAI, trained_job: Any) -> None:
    page = client.fine_tuning.jobs.checkpoints.list(trained_job.id)
    assert [c.step_number for c in page.data] == [24, 21, 18]
    assert page.has_more is False
    newest = page.data[0]
    assert newest.id.startswith("ftckpt_")
    assert newest.fine_tuning_job_id == trained_job.id
    assert newest.fine_tuned_model_checkpoint == f"{trained_job.fine_tuned_model}:ckpt-step-24"
    assert newest.metrics.train_loss is not None and newest.metrics.full_valid_loss is not None
    second = client.fine_tuning.jobs.checkpoints.list(trained_job.id, limit=1, after=newest.id)
    assert [c.step_number for c in second.data] == [21] and second.has_more is True


def test_bad_training_data_fails_with_line_number(client: openai.OpenAI, sandbox: Sandbox) -> None:
    lines = chat_jsonl().decode().splitlines()
    lines[3] = '{"messages": [{"role": "user", "content": "no answer"'  # truncated JSON
    file_id = _upload(client, "\n".join(lines).encode())
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    job = wait_for_status(client, job.id, {"failed", "succeeded"})
    assert job.status == "failed"
    assert job.error is not None
    assert job.error.code == "invalid_training_file"
    assert job.error.param == "training_file"
    assert "line 4" in job.error.message
    assert job.fine_tuned_model is None and job.finished_at is not None
    newest = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert newest.level == "error" and "line 4" in newest.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (chat_jsonl(QA[:4]), "has 4 example(s), but must have at least 10"),
        (b'{"text": "x"}\n' * 12, "line 1: unrecognized example format"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}]}\n' * 12,
            "no assistant message",
        ),
    ],
)
def test_invalid_datasets(client: openai.OpenAI, content: bytes, expected: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=_upload(client, content)
    )
    job = wait_for_status(client, job.id, {"failed", "succeeded"})
    assert job.status == "failed" and job.error is not None
    assert expected in job.error.message


def test_injected_failure_at_start_of_running(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=training_file,
        metadata={"sandbox_fail": "server_error"},
    )
    job = wait_for_status(client, job.id, {"failed", "succeeded"})
    assert job.status == "failed"
    assert job.error is not None and job.error.code == "server_error"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=50).data]
    assert "Fine-tuning job started" in messages
    assert not any(m.startswith("Step ") for m in messages)


def test_pause_freezes_and_resume_continues(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    wait_for_status(client, job.id, {"running"})
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused" and paused.estimated_finish is None

    def steps() -> int:
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        return sum(1 for e in events if e.type == "metrics")

    frozen = steps()
    time.sleep(0.4)  # longer than several steps: nothing may progress while paused
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert steps() == frozen

    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    assert resumed.estimated_finish is not None
    done = wait_for_status(client, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert messages.index("Fine-tuning job resumed") < messages.index("Fine-tuning job paused")
    assert steps() == 24


def test_cancel_is_immediate_and_idempotent(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)


def test_cancel_of_finished_job_is_rejected(client: openai.OpenAI, trained_job: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.cancel(trained_job.id)
    assert "already completed" in caught.value.message


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}},
            "method.dpo.hyperparameters.beta",
        ),
        ({"method": {"type": "bogus"}}, "method.type"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"model": "gpt-5-unknown"}, "model"),
        ({"training_file": "file-doesnotexist"}, "training_file"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_create_is_400_with_param(
    client: openai.OpenAI, training_file: str, kwargs: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": "gpt-4o-mini", "training_file": training_file, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(**request)
    error = caught.value
    assert error.status_code == 400
    assert error.param == param
    assert error.type == "invalid_request_error"
    assert isinstance(error.body, dict) and set(error.body) == {"message", "type", "param", "code"}


def test_training_file_must_have_fine_tune_purpose(client: openai.OpenAI) -> None:
    other = client.files.create(file=("notes.jsonl", chat_jsonl()), purpose="assistants")
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=other.id)
    assert caught.value.param == "training_file"


def test_raw_validation_errors_are_400_not_422(sandbox: Sandbox) -> None:
    headers = {"Authorization": "Bearer test"}
    with sandbox.control() as http:
        missing = http.post("/v1/fine_tuning/jobs", json={"model": "gpt-4o-mini"}, headers=headers)
        assert missing.status_code == 400
        assert missing.json()["error"]["param"] == "training_file"
        assert missing.json()["error"]["code"] == "missing_required_parameter"
        bad_json = http.post(
            "/v1/fine_tuning/jobs",
            content=b"{not json",
            headers={**headers, "content-type": "application/json"},
        )
        assert bad_json.status_code == 400
        assert "could not parse the JSON body" in bad_json.json()["error"]["message"]
        bad_limit = http.get("/v1/fine_tuning/jobs?limit=abc", headers=headers)
        assert bad_limit.status_code == 400
        assert bad_limit.json()["error"]["param"] == "limit"
        unknown = http.get("/v1/nothing-here", headers=headers)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "Invalid URL (GET /v1/nothing-here)"


def test_unknown_job_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.jobs.retrieve("ftjob-missing")
    assert caught.value.code == "fine_tune_not_found"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-missing")


def test_null_metadata_filter(sandbox: Sandbox, training_file: str) -> None:
    client = sandbox.client()
    bare = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    with sandbox.control() as http:
        body = http.get(
            "/v1/fine_tuning/jobs?metadata=null&limit=100",
            headers={"Authorization": "Bearer test"},
        ).json()
    ids = [job["id"] for job in body["data"]]
    assert bare.id in ids
    assert all(job["metadata"] is None for job in body["data"])
    client.fine_tuning.jobs.cancel(bare.id)


def test_organization_header_names_the_model(sandbox: Sandbox, training_file: str) -> None:
    client = sandbox.client(organization="org-acme")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    done = wait_for_status(client, job.id, {"succeeded", "failed"})
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:org-acme::")
    assert client.models.retrieve(done.fine_tuned_model).owned_by == "org-acme"


def test_result_file_is_downloadable_raw(sandbox: Sandbox, trained_job: Any) -> None:
    with sandbox.control() as http:
        response = http.get(
            f"/v1/files/{trained_job.result_files[0]}/content",
            headers={"Authorization": "Bearer test"},
        )
    assert response.status_code == 200
    assert response.headers["x-sandbox"] == "true"
    assert response.text.startswith("step,train_loss,")
