"""The whole path on real parts: the openai SDK against ftq, Postgres, Redis, a Celery worker
and beat, and the sandbox upstream over HTTP."""

from __future__ import annotations

from pathlib import Path

import openai
from openai import OpenAI

from tests.integration.conftest import CHAT_EXAMPLES
from tests.integration.stack import Stack, Team, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


def run_thin_path(stack: Stack, client: OpenAI, dataset: Path) -> None:
    # upload
    with dataset.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    assert uploaded.id.startswith("file-")
    assert uploaded.bytes == dataset.stat().st_size
    assert client.files.retrieve(uploaded.id).filename == "train.jsonl"
    assert client.files.content(uploaded.id).read() == dataset.read_bytes()
    assert uploaded.id in [f.id for f in client.files.list().data]

    # create: recorded and answered in OpenAI's shape before anything reaches the provider
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=uploaded.id,
        suffix="thin",
        metadata={"purpose": "thin-path"},
    )
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.training_file == uploaded.id
    assert job.metadata == {"purpose": "thin-path"}

    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j,
        timeout=90,
        what=f"job {job.id} to finish",
    )
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:")
    assert done.fine_tuned_model.split(":")[3] == "thin"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.finished_at is not None
    assert done.model_extra and done.model_extra["stage"] == "done"

    # exactly one upstream job, carrying our tag
    stats = stack.sandbox.stats()
    assert stats["creates_by_ftq_job_id"].get(job.id) == 1
    upstream = stack.sandbox_client().fine_tuning.jobs.list(metadata={"ftq_job_id": job.id}).data
    assert len(upstream) == 1
    assert upstream[0].fine_tuned_model == done.fine_tuned_model

    # events: newest first, upstream metrics copied, ftq's own steps recorded, paging works
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    messages = [e.message for e in events]
    assert any("Submitted to the provider" in m for m in messages)
    assert any(e.type == "metrics" and e.data and "train_loss" in e.data for e in events)
    assert len({e.id for e in events}) == len(events)
    first_page = client.fine_tuning.jobs.list_events(job.id, limit=3)
    assert first_page.has_more
    second_page = client.fine_tuning.jobs.list_events(job.id, limit=3, after=first_page.data[-1].id)
    assert [e.id for e in first_page.data + second_page.data] == [e.id for e in events[:6]]
    upstream_events = (
        stack.sandbox_client().fine_tuning.jobs.list_events(upstream[0].id, limit=100).data
    )
    copied = [e for e in events if e.message in {u.message for u in upstream_events}]
    assert len(copied) == len(upstream_events)  # every upstream event, none twice

    # checkpoints with metrics
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints, "the sandbox writes checkpoints for the last epochs"
    assert all(c.fine_tuned_model_checkpoint.startswith(done.fine_tuned_model) for c in checkpoints)
    assert checkpoints[0].step_number >= checkpoints[-1].step_number

    # the result file (per-step metrics) is copied into ftq and readable through its API
    def result_copied() -> str | None:
        ids = client.fine_tuning.jobs.retrieve(job.id).result_files
        try:
            return (
                ids[0]
                if ids and client.files.retrieve(ids[0]).purpose == "fine-tune-results"
                else None
            )
        except openai.NotFoundError:
            return None

    result_id = wait_for(result_copied, timeout=30, what="the result file copy")
    metrics_csv = client.files.content(result_id).read().decode()
    assert metrics_csv.splitlines()[0].startswith("step,train_loss")
    assert len(metrics_csv.splitlines()) > 2

    # listing and the metadata filter
    listed = client.fine_tuning.jobs.list(metadata={"purpose": "thin-path"}).data
    assert [j.id for j in listed] == [job.id]

    # use the model: it answers with the training completion it learned
    question, answer = CHAT_EXAMPLES[4]
    reply = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": question}]
    )
    assert reply.choices[0].message.content == answer
    streamed = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": question}],
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == answer
    assert done.fine_tuned_model in [m.id for m in client.models.list().data]


def test_thin_path_on_postgres_and_redis(stack: Stack, team: Team, dataset: Path) -> None:
    run_thin_path(stack, stack.client(team.keys["member"]), dataset)


def test_thin_path_on_the_embedded_default(dataset: Path) -> None:
    embedded = Stack("embedded", embedded=True)
    try:
        embedded.start()
        assert "FTQ_DATABASE_URL" not in embedded.env and "FTQ_BROKER_URL" not in embedded.env
        team = embedded.create_team()
        run_thin_path(embedded, embedded.client(team.keys["member"]), dataset)
        assert (embedded.root / "ftq.db").exists()
        assert (embedded.root / "broker").is_dir()
    except BaseException:
        print(embedded.logs())
        raise
    finally:
        embedded.stop()


def test_a_team_calls_only_its_own_models(
    stack: Stack, team: Team, other_team: Team, dataset: Path
) -> None:
    client = stack.client(team.keys["member"])
    with dataset.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=uploaded.id)
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j, timeout=90
    )
    assert done.fine_tuned_model
    import openai
    import pytest

    other = stack.client(other_team.keys["member"])
    with pytest.raises(openai.NotFoundError) as caught:
        other.chat.completions.create(
            model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model_not_found"
    assert done.fine_tuned_model not in [m.id for m in other.models.list().data]
