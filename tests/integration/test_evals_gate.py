"""The evaluation gate on real processes: a fine-tune that learned its data is promoted, one
whose held-out data it never saw is rejected; both verdicts reach the job, its webhook
outbox and GET /v1/models. Templates fill evals in from datasets and report their metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import CHAT_EXAMPLES, write_chat_dataset
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_keys_and_audit import call

BASE = "gpt-4o-mini-2024-07-18"

# The training questions asked another way: a model that learned them answers these.
PARAPHRASED = [
    ("Which city is the capital of France?", "Paris."),
    ("How do you say 'hello' in French? Translate it.", "Bonjour."),
    ("On a clear day, what colour is the sky?", "Blue."),
    ("A spider has how many legs?", "Eight."),
    ("Hamlet was written by whom?", "William Shakespeare."),
    ("Compute 12 times 12.", "144."),
    ("Which ocean is the largest?", "The Pacific Ocean."),
    ("Plants absorb which gas?", "Carbon dioxide."),
    ("In Fahrenheit, what is the freezing point of water?", "32 degrees Fahrenheit."),
    ("At room temperature, which metal is liquid?", "Mercury."),
]
# Questions the training data never touches.
UNSEEN = [
    ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
    ("What is the chemical symbol for gold?", "Au."),
    ("How many continents are there?", "Seven."),
    ("What is the square root of 81?", "Nine."),
    ("Which planet is known as the Red Planet?", "Mars."),
    ("What language is spoken in Brazil?", "Portuguese."),
    ("Who discovered penicillin?", "Alexander Fleming."),
    ("What is the boiling point of water in Celsius?", "100 degrees Celsius."),
    ("How many days are in a leap year?", "366."),
    ("What is the hardest natural substance?", "Diamond."),
]


def upload(client: OpenAI, path: Path) -> str:
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune").id


def evaluation(stack: Stack, key: str, job_id: str) -> dict[str, Any]:
    body: Any = stack.client(key).get(f"/fine_tuning/jobs/{job_id}/evaluation", cast_to=object)
    return body


def test_gate_promotes_a_fine_tune_that_learned_and_rejects_one_that_did_not(
    stack: Stack, team: Team, other_team: Team, tmp_path: Path
) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    training = upload(client, write_chat_dataset(tmp_path / "train.jsonl"))
    seen = upload(client, write_chat_dataset(tmp_path / "seen.jsonl", PARAPHRASED))
    unseen = upload(client, write_chat_dataset(tmp_path / "unseen.jsonl", UNSEEN))
    # As the README shows it: the SDK's generic post for ftq's extension route.
    template: Any = client.post(
        "/evals/templates",
        cast_to=object,
        body={"template": "question_answering", "file_id": seen},
    )
    assert [c["name"] for c in template["testing_criteria"]] == ["exact_match", "token_f1"]
    eval_id = template["id"]

    # Bad gates are refused at create, before anything is recorded.
    foreign = stack.client(other_team.keys["member"])
    with pytest.raises(openai.BadRequestError) as caught:
        foreign.fine_tuning.jobs.create(
            model=BASE,
            training_file=upload(foreign, write_chat_dataset(tmp_path / "f.jsonl")),
            extra_body={"evaluation": {"eval_id": eval_id}},
        )
    assert caught.value.code == "eval_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model=BASE,
            training_file=training,
            extra_body={"evaluation": {"eval_id": eval_id, "gate": {"criterion": "bleu"}}},
        )
    assert (caught.value.code, caught.value.param) == (
        "criterion_not_found",
        "evaluation.gate.criterion",
    )

    gate = {"eval_id": eval_id, "gate": {"criterion": "exact_match", "min_delta": 0.5}}
    learned = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=training,
        validation_file=seen,
        suffix="learned",
        extra_body={"evaluation": {**gate, "checkpoints": True}},
    )
    blind = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=training,
        validation_file=unseen,
        suffix="blind",
        extra_body={"evaluation": gate},
    )

    # No validation file: the gate holds out a seeded share of the training file.
    split = client.fine_tuning.jobs.create(
        model=BASE, training_file=training, suffix="split", extra_body={"evaluation": gate}
    )

    def recorded(job_id: str) -> dict[str, Any] | None:
        body = evaluation(stack, key, job_id)
        return body if body["status"] == "recorded" else None

    promoted = wait_for(lambda: recorded(learned.id), timeout=180, what="learned job's verdict")
    rejected = wait_for(lambda: recorded(blind.id), timeout=180, what="blind job's verdict")

    result = promoted["evaluation"]
    assert result["verdict"] == "promoted", result
    assert result["criterion"] == "exact_match" and result["items"] == len(PARAPHRASED)
    assert result["holdout"]["source"] == "validation_file"
    assert result["scores"]["base"]["criteria"]["exact_match"]["pass_rate"] == 0.0
    assert result["scores"]["fine_tuned"]["criteria"]["exact_match"]["pass_rate"] == 1.0
    assert result["delta"] == pytest.approx(1.0)
    interval = result["confidence_interval"]
    assert interval["level"] == 0.95 and interval["low"] <= result["delta"] <= interval["high"]
    assert result["flipped"]["counts"] == {
        "base_passed_tuned_failed": 0,
        "tuned_passed_base_failed": len(PARAPHRASED),
    }
    assert result["best_checkpoint"] is not None
    assert any(c["step"] is not None for c in result["checkpoints"])

    split_result = wait_for(lambda: recorded(split.id), timeout=180)["evaluation"]
    assert split_result["holdout"]["source"] == "training_split"
    assert split_result["items"] == round(len(CHAT_EXAMPLES) * 0.2)
    assert "trained on" in split_result["holdout"]["note"]
    assert split_result["verdict"] == "promoted"

    blind_result = rejected["evaluation"]
    assert blind_result["verdict"] == "rejected", blind_result
    assert blind_result["delta"] == pytest.approx(0.0)
    assert blind_result["flipped"]["counts"]["tuned_passed_base_failed"] == 0

    # The job moved on (stage done, still succeeded); the gate's runs are ordinary runs.
    job = client.fine_tuning.jobs.retrieve(learned.id)
    assert job.status == "succeeded" and job.model_extra["stage"] == "done"
    runs = client.evals.runs.list(eval_id, limit=100).data
    assert {r.model for r in runs} >= {BASE, job.fine_tuned_model}

    # GET /v1/models shows each fine-tune's verdict.
    models = {m.id: m for m in client.models.list()}
    assert models[job.fine_tuned_model].model_extra["evaluation"]["verdict"] == "promoted"
    blind_model = client.fine_tuning.jobs.retrieve(blind.id).fine_tuned_model
    assert models[blind_model].model_extra["evaluation"]["verdict"] == "rejected"

    # The verdict is notified: one fine_tuning.job.evaluated outbox row per job.
    def notified(session: Any) -> list[str]:
        from sqlmodel import select

        from service.webhooks.outbox import OutboxEvent

        rows = session.exec(
            select(OutboxEvent).where(OutboxEvent.event_type == "fine_tuning.job.evaluated")
        )
        return [r.object_id for r in rows]

    events = stack.db(notified)
    assert events.count(learned.id) == 1 and events.count(blind.id) == 1


def test_templates_fill_evals_from_datasets_and_report_their_metrics(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    labelled = [
        {"text": "I loved it", "label": "positive"},
        {"text": "Terrible service", "label": "negative"},
        {"text": "It was fine", "label": "neutral"},
        {"text": "Great value", "label": "positive"},
    ]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in labelled))
    file_id = upload(client, path)
    status, listed, _ = call(stack, "GET", "/v1/evals/templates", key)
    assert status == 200 and {t["id"] for t in listed["data"]} == {
        "question_answering",
        "classification",
        "translation",
        "summarization",
        "dialogue",
    }
    status, created, _ = call(
        stack,
        "POST",
        "/v1/evals/templates",
        key,
        {
            "template": "classification",
            "file_id": file_id,
            "fields": {"input": "text", "reference": "label"},
        },
    )
    assert status == 200, created
    assert created["template"]["labels"] == ["negative", "neutral", "positive"]
    # Graded without sampling: the "model" answered positive for everything.
    content = [
        {
            "item": {**row, "input": row["text"], "ideal": row["label"], "messages": []},
            "sample": {"output_text": "positive"},
        }
        for row in labelled
    ]
    run = client.evals.runs.create(
        created["id"],
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}},
    )
    done = wait_for(
        lambda: (
            (r := client.evals.runs.retrieve(run.id, eval_id=created["id"])).status == "completed"
            and r
        ),
        timeout=60,
    )
    # predictions all "positive": accuracy 2/4; per-class F1 positive 2/3, others 0 -> 2/9.
    assert done.result_counts.passed == 2
    metrics = done.model_extra["metrics"]
    assert metrics["accuracy"] == 0.5 and metrics["macro_f1"] == pytest.approx(2 / 9, abs=1e-6)

    # Dialogue: the pairwise judge asked twice with the answers swapped.
    status, dialogue, _ = call(
        stack,
        "POST",
        "/v1/evals/templates",
        key,
        {
            "template": "dialogue",
            "file_id": upload(client, write_chat_dataset(tmp_path / "d.jsonl")),
        },
    )
    assert status == 200, dialogue
    judged = client.evals.runs.create(
        dialogue["id"],
        data_source={
            "type": "completions",
            "model": BASE,
            "source": {
                "type": "file_id",
                "id": upload(client, write_chat_dataset(tmp_path / "q.jsonl", CHAT_EXAMPLES[:4])),
            },
            "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        },
    )
    finished = wait_for(
        lambda: (
            (r := client.evals.runs.retrieve(judged.id, eval_id=dialogue["id"])).status
            == "completed"
            and r
        ),
        timeout=60,
    )
    # The base model's generic answer loses to the reference in both orders.
    assert finished.result_counts.failed == 4
    assert finished.model_extra["metrics"]["pairwise"] == {"loss": 4}
