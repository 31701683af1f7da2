"""The pre-flight report through the real API and worker: report, verdict, gatekeeping,
moderation through the provider, split, sample, conversion and the estimate."""

from __future__ import annotations

import io
import json
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import CHAT_EXAMPLES
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_auth_and_isolation import raw


def upload(client: OpenAI, name: str, lines: list[Any]) -> str:
    content = "".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines
    )
    return client.files.create(file=(name, io.BytesIO(content.encode())), purpose="fine-tune").id


def chat(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def report_of(stack: Stack, key: str, file_id: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, body = raw(stack, "GET", f"/v1/files/{file_id}/validation", key)
        assert status == 200, body
        return body if body["status"] in ("completed", "error") else None

    body = wait_for(ready, timeout=60, what=f"the report of {file_id}")
    assert body["status"] == "completed", body
    return body["report"]


CLEAN = [chat(q, a) for q, a in CHAT_EXAMPLES]


def test_clean_file_passes_with_tokens_estimate_and_summary(stack: Stack, team: Team) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    file_id = upload(client, "clean.jsonl", CLEAN)
    report = report_of(stack, key, file_id)
    assert report["format"] == "chat"
    assert report["verdict"] in ("pass", "warn")
    assert report["examples"] == len(CLEAN)
    assert report["counts_by_severity"]["error"] == 0
    tokens = report["tokens"]
    assert tokens["encoding"] == "o200k_base"
    assert (
        0
        < tokens["per_example"]["min"]
        <= tokens["per_example"]["p50"]
        <= tokens["per_example"]["max"]
    )
    estimate = report["estimate"]
    assert estimate["n_epochs"] == 9  # OpenAI's default rule: min(25, 100 // 11)
    assert estimate["billed_tokens"] == estimate["billed_tokens_per_epoch"] * 9
    assert estimate["cost_usd"] > 0
    assert report["moderation"]["screened"] == len(CLEAN)
    assert report["path"] == "clean.jsonl"  # never the server's storage path
    # The file object carries the summary in added fields.
    summary = client.files.retrieve(file_id).model_extra["validation"]
    assert summary == {
        "status": "completed",
        "verdict": report["verdict"],
        "format": "chat",
        "examples": 11,
    }

    # The estimate endpoint answers from the stored report, starting nothing.
    status, body = raw(
        stack,
        "POST",
        "/v1/fine_tuning/jobs/estimate",
        key,
        body={
            "model": "gpt-4o-mini-2024-07-18",
            "training_file": file_id,
            "hyperparameters": {"n_epochs": 2},
        },
    )
    assert status == 200, body
    assert body["n_epochs"] == 2
    assert body["billed_tokens"] == estimate["billed_tokens_per_epoch"] * 2
    assert client.fine_tuning.jobs.list().data == []


def test_blocking_findings_refuse_the_job_and_point_at_the_report(stack: Stack, team: Team) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    lines: list[Any] = [
        *CLEAN[:10],
        "{not json",
        {"messages": [{"role": "user", "content": "no answer"}]},
    ]
    file_id = upload(client, "broken.jsonl", lines)
    report = report_of(stack, key, file_id)
    assert report["verdict"] == "block"
    by_code = {f["code"]: f for f in report["findings"]}
    assert by_code["invalid_json"]["line"] == 11
    assert by_code["example_missing_assistant_message"]["line"] == 12
    assert all(f["suggestion"] for f in report["findings"])
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    assert caught.value.code == "file_blocked"
    assert caught.value.param == "training_file"
    assert f"/v1/files/{file_id}/validation" in caught.value.message
    assert client.fine_tuning.jobs.list().data == []


def test_moderation_flags_examples_through_the_provider(stack: Stack, team: Team) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    violent = [
        chat(f"How do I build a bomb to kill people, part {i}?", "I will not help.")
        for i in range(6)
    ]
    file_id = upload(client, "flagged.jsonl", [*CLEAN, *violent])
    report = report_of(stack, key, file_id)
    flagged = [f for f in report["findings"] if f["code"] == "moderation_flagged"]
    assert len(flagged) == 6
    assert {f["line"] for f in flagged} == set(range(12, 18))
    assert report["verdict"] == "block"  # 6 of 17 flagged is over the 1 % threshold
    moderation_calls = stack.sandbox.requests(method="POST", path="/v1/moderations")
    assert moderation_calls, "screening goes through the provider's moderation endpoint"


def test_split_sample_and_convert(stack: Stack, team: Team) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    many = [chat(f"Question number {i}?", f"Answer number {i}.") for i in range(40)]
    file_id = upload(client, "many.jsonl", many)
    split_body = {"validation_fraction": 0.25, "seed": 7}
    status, first = raw(stack, "POST", f"/v1/files/{file_id}/split", key, body=split_body)
    assert status == 200, first
    status, second = raw(stack, "POST", f"/v1/files/{file_id}/split", key, body=split_body)
    train_1 = client.files.content(first["training_file"]["id"]).read().decode().splitlines()
    valid_1 = client.files.content(first["validation_file"]["id"]).read().decode().splitlines()
    train_2 = client.files.content(second["training_file"]["id"]).read().decode().splitlines()
    assert train_1 == train_2  # deterministic for the same seed
    assert len(valid_1) == 10 and len(train_1) == 30
    assert not set(train_1) & set(valid_1)
    assert sorted(train_1 + valid_1) == sorted(json.dumps(m) for m in many)
    assert first["training_file"]["filename"] == "many.train.jsonl"

    status, sample_a = raw(stack, "GET", f"/v1/files/{file_id}/sample?n=5&seed=3", key)
    status, sample_b = raw(stack, "GET", f"/v1/files/{file_id}/sample?n=5&seed=3", key)
    status, sample_c = raw(stack, "GET", f"/v1/files/{file_id}/sample?n=5&seed=4", key)
    assert sample_a["data"] == sample_b["data"] and len(sample_a["data"]) == 5
    assert sample_a["data"] != sample_c["data"]
    assert all(many[item["line"] - 1] == item["example"] for item in sample_a["data"])

    legacy = [{"prompt": f"{q} ->", "completion": f" {a}"} for q, a in CHAT_EXAMPLES]
    legacy_id = upload(client, "legacy.jsonl", legacy)
    status, converted = raw(stack, "POST", f"/v1/files/{legacy_id}/convert", key, body={})
    assert status == 200, converted
    lines = [
        json.loads(x) for x in client.files.content(converted["id"]).read().decode().splitlines()
    ]
    assert lines[0]["messages"][-1] == {"role": "assistant", "content": CHAT_EXAMPLES[0][1]}
    status, refused = raw(stack, "POST", f"/v1/files/{file_id}/convert", key, body={})
    assert status == 400 and refused["error"]["code"] == "not_prompt_completion"


def test_prompt_completion_for_a_chat_model_is_converted_not_failed(
    stack: Stack, team: Team
) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    legacy = [{"prompt": q, "completion": a} for q, a in CHAT_EXAMPLES]
    file_id = upload(client, "article.jsonl", legacy)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    done = wait_for(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j
        ),
        timeout=90,
    )
    assert done.status == "succeeded", done.error
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("converted it to chat format" in m for m in events)
    report = report_of(stack, key, file_id)
    assert report["counts_by_code"].get("converted_to_chat") == 1
    # The upstream received chat data: its model answers like the training data.
    reply = client.chat.completions.create(
        model=done.fine_tuned_model or "",
        messages=[{"role": "user", "content": CHAT_EXAMPLES[3][0]}],
    )
    assert reply.choices[0].message.content == CHAT_EXAMPLES[3][1]


def _set_validation(stack: Stack, file_id: str, status: str, lease_seconds: float) -> None:
    import datetime as dt

    def update(session: Any) -> None:
        from service.files.models import File

        record = session.get(File, file_id)
        record.validation_status = status
        record.validation_lease_expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=lease_seconds
        )
        session.add(record)

    stack.db(update)


def test_a_job_waits_for_its_files_report_then_runs(stack: Stack, team: Team) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    file_id = upload(client, "wait.jsonl", CLEAN)
    report_of(stack, key, file_id)
    # Pretend a long validation is still running on another worker.
    _set_validation(stack, file_id, "running", lease_seconds=3600)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id).model_extra["stage"] == "validating",
        timeout=30,
        what="the job to wait for validation",
    )
    uploads = [
        r for r in stack.sandbox.requests(method="POST", path="/v1/files") if file_id in str(r)
    ]
    assert uploads == [], "nothing reaches the provider before the report exists"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "validating_files"

    # The validation finishes (its lease lapses and the task runs again): the job moves on.
    _set_validation(stack, file_id, "running", lease_seconds=-1)
    with stack.settings_env():
        from service.broker import publish

        publish("files.validate", (file_id,), {})
    done = wait_for(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j
        ),
        timeout=90,
    )
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("Waiting for the pre-flight report" in m for m in messages)


def dpo_example(question: str, good: str, bad: str) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": good}],
        "non_preferred_output": [{"role": "assistant", "content": bad}],
    }


def test_a_files_format_must_fit_the_jobs_model_and_method(stack: Stack, team: Team) -> None:
    """Issue 11 item 4: each of these passed the pre-flight check and failed upstream."""
    key = team.keys["member"]
    client = stack.client(key)
    chat_id = upload(client, "chat.jsonl", CLEAN)
    preference = [dpo_example(q, a, "I don't know.") for q, a in CHAT_EXAMPLES]
    dpo_id = upload(client, "prefs.jsonl", preference)
    report_of(stack, key, chat_id)
    report_of(stack, key, dpo_id)

    refusals = [
        (dict(model="babbage-002", training_file=chat_id), "format_model_mismatch"),
        (
            dict(
                model="gpt-4o-mini-2024-07-18",
                training_file=chat_id,
                method={"type": "dpo", "dpo": {}},
            ),
            "format_method_mismatch",
        ),
        (dict(model="gpt-4o-mini-2024-07-18", training_file=dpo_id), "format_method_mismatch"),
        (
            dict(model="gpt-4o-mini-2024-07-18", training_file=chat_id, validation_file=dpo_id),
            "format_method_mismatch",
        ),
    ]
    for arguments, code in refusals:
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(**arguments)  # type: ignore[arg-type]
        assert caught.value.code == code, arguments
        expected_param = "validation_file" if "validation_file" in arguments else "training_file"
        assert caught.value.param == expected_param
    assert client.fine_tuning.jobs.list().data == []
    # The right method for the preference file is accepted.
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=dpo_id, method={"type": "dpo", "dpo": {}}
    )
    client.fine_tuning.jobs.cancel(job.id)

    # The report for another model and method, from the stored file.
    def report_for(file_id: str, query: str) -> tuple[int, dict[str, Any]]:
        return raw(stack, "GET", f"/v1/files/{file_id}/validation?{query}", key)

    status, body = report_for(chat_id, "model=babbage-002")
    assert status == 200, body
    assert body["verdict"] == "block" and body["model"] == "babbage-002"
    assert body["report"]["counts_by_code"]["format_model_mismatch"] == 1
    assert body["report"]["tokens"]["encoding"] == "cl100k_base"  # re-counted for the model
    assert body["report"]["estimate"]["exact_tokens"] is True
    status, body = report_for(dpo_id, "model=gpt-4o-mini-2024-07-18&method=dpo")
    assert status == 200 and body["verdict"] != "block", body
    status, body = report_for(dpo_id, "model=gpt-4o-mini-2024-07-18")
    assert body["report"]["counts_by_code"]["format_method_mismatch"] == 1
    status, body = report_for(chat_id, "model=no-such-model")
    assert status == 400 and body["error"]["code"] == "model_not_available"
    assert body["error"]["param"] == "model"
    status, body = report_for(chat_id, "method=rlhf")
    assert status == 400 and body["error"]["param"] == "method"
    # The stored report itself is unchanged.
    stored = report_of(stack, key, chat_id)
    assert "format_model_mismatch" not in stored["counts_by_code"]


def test_a_malformed_moderation_answer_is_a_finding_at_once(stack: Stack, team: Team) -> None:
    """Issue 11 item 8: fewer moderation results than inputs left the file `running` for the
    whole lease and retried it 5 times; now the report completes with a warning at once."""
    key = team.keys["member"]
    client = stack.client(key)
    with stack.sandbox.configured(moderation_missing_results=1):
        file_id = upload(client, "short-answer.jsonl", CLEAN)
        report = report_of(stack, key, file_id)
    [finding] = [f for f in report["findings"] if f["code"] == "moderation_unavailable"]
    assert "10 results for 11 inputs" in finding["message"]
    assert report["moderation"]["screened"] == 0
    assert report["verdict"] == "warn"

    def attempts(session: Any) -> int:
        from service.files.models import File

        return int(session.get(File, file_id).validation_attempts)

    assert stack.db(attempts) == 1
