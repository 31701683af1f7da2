"""The Evals API through the official SDK against real processes (API, worker, beat, sandbox):
evals and runs end to end, graders run and validate, base models callable, bad input as
precise 400s, another team's evals and models out of reach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import CHAT_EXAMPLES
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_keys_and_audit import call

BASE = "gpt-4o-mini-2024-07-18"
JUDGE = "gpt-4.1-mini-2025-04-14"
ITEM_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
QA_ITEMS = [{"item": {"question": q, "answer": a}} for q, a in CHAT_EXAMPLES[:6]]


def _criteria() -> list[dict[str, Any]]:
    return [
        {
            "type": "string_check",
            "name": "mentions_answer",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "ilike",
        },
        {
            "type": "text_similarity",
            "name": "rouge",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "evaluation_metric": "rouge_l",
            "pass_threshold": 0.5,
        },
        {
            "type": "label_model",
            "name": "judge",
            "model": JUDGE,
            "input": [
                {
                    "role": "user",
                    "content": "Reference: {{item.answer}}\nAnswer: {{sample.output_text}}",
                }
            ],
            "labels": ["correct", "incorrect"],
            "passing_labels": ["correct"],
        },
    ]


def create_eval(client: OpenAI, **extra: Any) -> Any:
    return client.evals.create(
        name="capitals",
        data_source_config={
            "type": "custom",
            "item_schema": ITEM_SCHEMA,
            "include_sample_schema": True,
        },
        testing_criteria=_criteria(),  # type: ignore[arg-type]
        **extra,
    )


def wait_run(client: OpenAI, eval_id: str, run_id: str, timeout: float = 90) -> Any:
    return wait_for(
        lambda: (
            (r := client.evals.runs.retrieve(run_id, eval_id=eval_id)).status
            in ("completed", "failed", "canceled")
            and r
        ),
        timeout=timeout,
        what=f"run {run_id}",
    )


def test_evals_flow_end_to_end(stack: Stack, team: Team, tmp_path: Path) -> None:
    client = stack.client(team.keys["member"])
    created = create_eval(client, metadata={"owner": "ml"})
    assert created.object == "eval" and created.id.startswith("eval_")
    assert created.data_source_config.type == "custom"
    assert created.data_source_config.schema_["properties"]["item"] == ITEM_SCHEMA
    assert [c.name for c in created.testing_criteria] == ["mentions_answer", "rouge", "judge"]

    assert client.evals.retrieve(created.id).name == "capitals"
    assert client.evals.update(created.id, name="capitals v2").name == "capitals v2"
    assert created.id in [e.id for e in client.evals.list()]

    # A completions run: the team's base model samples, the graders (and a judge) grade.
    run = client.evals.runs.create(
        created.id,
        name="base",
        data_source={
            "type": "completions",
            "model": BASE,
            "source": {"type": "file_content", "content": QA_ITEMS},
            "input_messages": {
                "type": "template",
                "template": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "{{item.question}}"},
                ],
            },
            "sampling_params": {"temperature": 0, "max_completion_tokens": 64, "seed": 1},
        },
    )
    assert run.object == "eval.run" and run.status in ("queued", "in_progress")
    done = wait_run(client, created.id, run.id)
    assert done.status == "completed"
    # The sandbox's base model answers generically: every item fails every criterion.
    assert done.result_counts.model_dump() == {"total": 6, "passed": 0, "failed": 6, "errored": 0}
    per = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert per == {"mentions_answer": (0, 6), "rouge": (0, 6), "judge": (0, 6)}
    usage = {u.run_model_name: u for u in done.per_model_usage}
    assert usage[BASE].invocation_count == 6 and usage[JUDGE].invocation_count == 6

    items = client.evals.runs.output_items.list(run.id, eval_id=created.id, limit=4)
    assert len(items.data) == 4 and items.has_more
    everything = list(client.evals.runs.output_items.list(run.id, eval_id=created.id))
    assert [i.datasource_item_id for i in everything] == list(range(6))
    first = client.evals.runs.output_items.retrieve(
        everything[0].id, eval_id=created.id, run_id=run.id
    )
    assert first.status == "fail" and first.sample.model == BASE
    assert first.sample.input[-1].content == CHAT_EXAMPLES[0][0]
    assert {r.name for r in first.results} == {"mentions_answer", "rouge", "judge"}
    judge = next(r for r in first.results if r.name == "judge")
    assert judge.sample and judge.sample["label"] == "incorrect"

    # A jsonl run from a file: samples given, nothing is called.
    lines = [
        {"item": {"question": q, "answer": a}, "sample": {"output_text": a, "model": "human"}}
        for q, a in CHAT_EXAMPLES[:5]
    ]
    path = tmp_path / "graded.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="fine-tune").id
    calls_before = len(stack.sandbox.requests(method="POST", path="/v1/chat/completions"))
    jsonl = client.evals.runs.create(
        created.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": file_id}}
    )
    jsonl_done = wait_run(client, created.id, jsonl.id)
    assert jsonl_done.result_counts.passed == 5
    # Only the judge was called (one per item); no sampling.
    judge_calls = (
        len(stack.sandbox.requests(method="POST", path="/v1/chat/completions")) - calls_before
    )
    assert judge_calls == 5
    assert [r.id for r in client.evals.runs.list(created.id)] == [run.id, jsonl.id]
    assert [r.id for r in client.evals.runs.list(created.id, status="completed", order="desc")] == [
        jsonl.id,
        run.id,
    ]

    # The month's eval spend counts the sampling and judge calls at the configured prices.
    cost = done.model_extra["cost_usd"]
    assert cost > 0

    def spend(session: Any) -> float:
        from service.evals.service import eval_spend

        return eval_spend(session, team.id)

    assert stack.db(spend) == pytest.approx(cost + jsonl_done.model_extra["cost_usd"], abs=1e-6)
    status, usage_body, _ = call(stack, "GET", "/v1/usage", team.keys["member"])
    assert status == 200 and usage_body["eval_cost_usd"] == pytest.approx(stack.db(spend))

    # A team over its monthly budget cannot start runs that call models.
    status, _, _ = call(stack, "PUT", "/v1/budget", team.keys["admin"], {"monthly_budget_usd": 0})
    assert status == 200
    status, refused, _ = call(
        stack,
        "POST",
        f"/v1/evals/{created.id}/runs",
        team.keys["member"],
        {"data_source": {"type": "jsonl", "source": {"type": "file_id", "id": file_id}}},
    )
    assert (status, refused["error"]["code"]) == (402, "budget_exceeded")
    call(stack, "PUT", "/v1/budget", team.keys["admin"], {"monthly_budget_usd": None})

    deleted = client.evals.runs.delete(jsonl.id, eval_id=created.id)
    assert deleted.deleted and deleted.run_id == jsonl.id
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(jsonl.id, eval_id=created.id)
    gone = client.evals.delete(created.id)
    assert gone.deleted and gone.eval_id == created.id
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(created.id)


def test_cancel_stops_a_run_within_an_item(stack: Stack, team: Team) -> None:
    client = stack.client(team.keys["member"])
    created = create_eval(client)
    many = [{"item": {"question": f"Question {i}?", "answer": "x"}} for i in range(60)]
    with stack.sandbox.configured(slow_rate=1.0, slow_seconds=0.3, fault_paths="chat/completions"):
        run = client.evals.runs.create(
            created.id,
            data_source={
                "type": "completions",
                "model": BASE,
                "source": {"type": "file_content", "content": many},
                "input_messages": {
                    "type": "template",
                    "template": [{"role": "user", "content": "{{item.question}}"}],
                },
            },
        )
        wait_for(
            lambda: (
                client.evals.runs.retrieve(run.id, eval_id=created.id).result_counts.failed >= 2
            ),
            timeout=60,
        )
        canceled = client.evals.runs.cancel(run.id, eval_id=created.id)
        assert canceled.status == "canceled"
        calls_at_cancel = len(stack.sandbox.requests(method="POST", path="/v1/chat/completions"))
        # Each worker thread finishes at most the item it was sampling (0.3 s), then stops.
        import time

        time.sleep(2.0)
        calls_after = len(stack.sandbox.requests(method="POST", path="/v1/chat/completions"))
    final = client.evals.runs.retrieve(run.id, eval_id=created.id)
    assert final.status == "canceled"
    assert calls_after - calls_at_cancel <= 8  # item_concurrency threads, one item each
    assert final.result_counts.failed < 60
    # Cancelling again is idempotent.
    assert client.evals.runs.cancel(run.id, eval_id=created.id).status == "canceled"


def test_graders_run_and_validate(stack: Stack, team: Team) -> None:
    client = stack.client(team.keys["member"])
    grader = {
        "type": "text_similarity",
        "name": "fuzzy",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "evaluation_metric": "fuzzy_match",
    }
    checked = client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
    assert checked.grader and checked.grader.name == "fuzzy"
    result = client.fine_tuning.alpha.graders.run(
        grader=grader,  # type: ignore[arg-type]
        model_sample="this is a test!",
        item={"reference": "this is a test"},
    )
    assert result.reward == pytest.approx(0.9655172413793103)
    multi = {
        "type": "multi",
        "name": "blend",
        "graders": {
            "exact": {
                "type": "string_check",
                "name": "exact",
                "input": "{{sample.output_text}}",
                "reference": "Paris",
                "operation": "eq",
            },
            "judge": {
                "type": "score_model",
                "name": "judge",
                "model": JUDGE,
                "input": [
                    {"role": "user", "content": "Reference: Paris\nAnswer: {{sample.output_text}}"}
                ],
                "range": [0, 1],
            },
        },
        "calculate_output": "0.5 * exact + 0.5 * judge",
    }
    blended = client.fine_tuning.alpha.graders.run(grader=multi, model_sample="Paris")  # type: ignore[arg-type]
    assert blended.reward == pytest.approx(1.0, abs=0.01)
    assert set(blended.sub_rewards) == {"exact", "judge"}


def test_listed_base_models_answer_chat_completions(stack: Stack, team: Team) -> None:
    client = stack.client(team.keys["member"])
    listed = [m.id for m in client.models.list() if not m.id.startswith("ft:")]
    assert BASE in listed
    for model in (BASE, JUDGE):
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gpt-unlisted", messages=[{"role": "user", "content": "hi"}]
        )


def _error(stack: Stack, key: str, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    status, got, _ = call(stack, method, path, key, body)
    return status, got.get("error", {})


def test_bad_input_is_a_precise_400(
    stack: Stack, team: Team, other_team: Team, tmp_path: Path
) -> None:
    key = team.keys["member"]
    config = {"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True}
    unknown = {"type": "regex", "name": "r", "input": "x", "reference": "y"}
    status, error = _error(
        stack,
        key,
        "POST",
        "/v1/evals",
        {"data_source_config": config, "testing_criteria": [unknown]},
    )
    assert (status, error["code"], error["param"]) == (
        400,
        "unknown_grader_type",
        "testing_criteria[0].type",
    )
    python = {"type": "python", "name": "p", "source": "def grade(sample, item): return 1.0"}
    status, error = _error(
        stack,
        key,
        "POST",
        "/v1/evals",
        {"data_source_config": config, "testing_criteria": [python]},
    )
    assert (status, error["code"]) == (400, "python_grader_disabled")
    missing = {**_criteria()[0], "reference": "{{item.capital}}"}
    status, error = _error(
        stack,
        key,
        "POST",
        "/v1/evals",
        {"data_source_config": config, "testing_criteria": [missing]},
    )
    assert (status, error["code"]) == (400, "invalid_template") and "item.capital" in error[
        "message"
    ]
    status, error = _error(
        stack,
        key,
        "POST",
        "/v1/fine_tuning/alpha/graders/run",
        {"grader": python, "model_sample": "x"},
    )
    assert (status, error["code"]) == (400, "python_grader_disabled")

    # A template naming a column the dataset does not have.
    path = tmp_path / "flat.jsonl"
    path.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in CHAT_EXAMPLES))
    client = stack.client(key)
    with path.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="fine-tune").id
    status, error = _error(
        stack,
        key,
        "POST",
        "/v1/evals/templates",
        {
            "template": "question_answering",
            "file_id": file_id,
            "fields": {"input": "question", "reference": "a"},
        },
    )
    assert (status, error["code"], error["param"]) == (400, "field_not_found", "fields.input")

    # A run on another team's fine-tuned model: the 400 a missing model gets.
    other_model = _give_model(stack, other_team)
    evaluation = create_eval(client)
    source = {"type": "file_content", "content": QA_ITEMS}
    template = {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}
    for model in (other_model, "gpt-unlisted"):
        status, error = _error(
            stack,
            key,
            "POST",
            f"/v1/evals/{evaluation.id}/runs",
            {
                "data_source": {
                    "type": "completions",
                    "model": model,
                    "source": source,
                    "input_messages": template,
                }
            },
        )
        assert (status, error["code"], error["param"]) == (
            400,
            "model_not_found",
            "data_source.model",
        )
    # Items missing a required field, and a template over a field the schema lacks.
    status, error = _error(
        stack,
        key,
        "POST",
        f"/v1/evals/{evaluation.id}/runs",
        {
            "data_source": {
                "type": "jsonl",
                "source": {"type": "file_content", "content": [{"item": {"question": "q"}}]},
            }
        },
    )
    assert (status, error["code"]) == (400, "invalid_item")
    bad_template = {"type": "template", "template": [{"role": "user", "content": "{{item.nope}}"}]}
    status, error = _error(
        stack,
        key,
        "POST",
        f"/v1/evals/{evaluation.id}/runs",
        {
            "data_source": {
                "type": "completions",
                "model": BASE,
                "source": source,
                "input_messages": bad_template,
            }
        },
    )
    assert (status, error["code"]) == (400, "invalid_template")
    # Nothing was half-written: the eval has no runs.
    assert client.evals.runs.list(evaluation.id).data == []


def test_another_teams_evals_runs_and_items_answer_404(
    stack: Stack, team: Team, other_team: Team
) -> None:
    client = stack.client(team.keys["member"])
    created = create_eval(client)
    run = client.evals.runs.create(
        created.id,
        data_source={
            "type": "jsonl",
            "source": {
                "type": "file_content",
                "content": [
                    {"item": {"question": "q", "answer": "a"}, "sample": {"output_text": "a"}}
                ],
            },
        },
    )
    wait_run(client, created.id, run.id)
    item = client.evals.runs.output_items.list(run.id, eval_id=created.id).data[0]
    intruder = stack.client(other_team.keys["admin"])
    for attempt in (
        lambda: intruder.evals.retrieve(created.id),
        lambda: intruder.evals.update(created.id, name="mine"),
        lambda: intruder.evals.delete(created.id),
        lambda: intruder.evals.runs.retrieve(run.id, eval_id=created.id),
        lambda: intruder.evals.runs.list(created.id),
        lambda: intruder.evals.runs.cancel(run.id, eval_id=created.id),
        lambda: intruder.evals.runs.delete(run.id, eval_id=created.id),
        lambda: intruder.evals.runs.output_items.list(run.id, eval_id=created.id),
        lambda: intruder.evals.runs.output_items.retrieve(
            item.id, eval_id=created.id, run_id=run.id
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert created.id not in [e.id for e in intruder.evals.list()]
    assert client.evals.retrieve(created.id).name == "capitals"


def _give_model(stack: Stack, owner: Team) -> str:
    """A succeeded job with a fine-tuned model in ``owner``'s team (written directly)."""
    import uuid

    model = f"ft:{BASE}:other::{uuid.uuid4().hex[:8]}"

    def make(session: Any) -> None:
        from service.files.models import File
        from service.jobs.models import FineTuningJob

        file = File(
            id=f"file-{uuid.uuid4().hex[:20]}",
            team_id=owner.id,
            filename="t.jsonl",
            purpose="fine-tune",
            bytes=1,
            sha256="0" * 64,
            storage_key="none",
        )
        session.add(file)
        session.flush()
        session.add(
            FineTuningJob(
                id=f"ftjob-{uuid.uuid4().hex[:20]}",
                team_id=owner.id,
                model=BASE,
                training_file_id=file.id,
                status="succeeded",
                stage="done",
                seed=1,
                account="acct",
                fine_tuned_model=model,
            )
        )

    stack.db(make)
    return model
