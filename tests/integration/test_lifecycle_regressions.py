"""Regressions for the data a job's life used to lose, on real processes (issue 10 item 6,
issue 11 items 1, 3 and 6): a terminal status seen at create or at adoption ends the job with
everything the provider has; statuses skipped between polls are still notified in order; an
upload interrupted at the provider is reused by the next job with the same content; an
upload the provider lost is sent again; lost result imports are reconciled; a cancel shows
at once; a file in use cannot be deleted.

One private stack for the module (its sandbox's knobs change per test, and tests kill its
workers).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import write_chat_dataset
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_keys_and_audit import call

MODEL = "gpt-4o-mini-2024-07-18"
TERMINAL = ("succeeded", "failed", "cancelled")
_workers = itertools.count(1)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # No SDK retries: one upload attempt is one request, so the interrupted-upload test can
    # count copies at the provider (ftq's own task retries still apply).
    stack = Stack(
        "lifecycle", extra_env={"SANDBOX_JOB_SPEED": "4", "FTQ_PROVIDER_MAX_RETRIES": "0"}
    )
    try:
        stack.start(workers=1)
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


@pytest.fixture
def team(stack: Stack) -> Team:
    return stack.create_team()


def _upload(stack: Stack, team: Team, path: Path) -> str:
    client = stack.client(team.keys["member"])
    with path.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="fine-tune").id
    wait_for(
        lambda: client.files.retrieve(file_id).model_extra["validation"]["status"] == "completed",
        timeout=60,
        what="the pre-flight report",
    )
    return file_id


def _finished(stack: Stack, team: Team, job_id: str, timeout: float = 120) -> Any:
    client = stack.client(team.keys["member"])
    return wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and j,
        timeout=timeout,
        what=f"job {job_id} to finish",
    )


def _job_row(stack: Stack, job_id: str) -> Any:
    def read(session: Any) -> Any:
        from service.jobs.models import FineTuningJob

        job = session.get(FineTuningJob, job_id)
        session.expunge(job)
        return job

    return stack.db(read)


def _notified(stack: Stack, job_id: str) -> list[str]:
    def read(session: Any) -> list[str]:
        from sqlmodel import select

        from service.webhooks.outbox import OutboxEvent

        rows = session.exec(
            select(OutboxEvent)
            .where(OutboxEvent.object_id == job_id)
            .order_by(OutboxEvent.sequence)  # type: ignore[arg-type]
        ).all()
        return [r.event_type for r in rows if r.event_type != "fine_tuning.job.checkpoint.created"]

    return stack.db(read)


def _assert_complete_success(stack: Stack, team: Team, job_id: str) -> None:
    """Everything the provider knows about a succeeded job is in ftq."""
    client = stack.client(team.keys["member"])
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded", job.error
    row = _job_row(stack, job_id)
    upstream = stack.sandbox_client().fine_tuning.jobs.retrieve(row.upstream_job_id)
    assert upstream.status == "succeeded"
    assert job.fine_tuned_model == upstream.fine_tuned_model is not None
    assert job.trained_tokens == upstream.trained_tokens is not None
    upstream_events = stack.sandbox_client().fine_tuning.jobs.list_events(
        row.upstream_job_id, limit=100
    )
    ours = client.fine_tuning.jobs.list_events(job_id, limit=100).data
    ours_messages = {e.message for e in ours}
    missing = [e.message for e in upstream_events.data if e.message not in ours_messages]
    assert not missing, missing
    upstream_ckpts = stack.sandbox_client().fine_tuning.jobs.checkpoints.list(row.upstream_job_id)
    ours_ckpts = client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert len(ours_ckpts) == len(upstream_ckpts.data) > 0
    # Result files are ftq's own copies (readable through ftq), filled in by the import task.
    wait_for(
        lambda: (r := _job_row(stack, job_id)).result_files and not r.results_pending,
        timeout=30,
        what="the result files to be imported",
    )
    for file_id in client.fine_tuning.jobs.retrieve(job_id).result_files:
        assert client.files.retrieve(file_id).purpose == "fine-tune-results"
    notified = _notified(stack, job_id)
    assert notified == [
        "fine_tuning.job.queued",
        "fine_tuning.job.running",
        "fine_tuning.job.succeeded",
    ], notified


def test_killed_during_create_and_finished_before_adoption_keeps_everything(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    file_id = _upload(stack, team, write_chat_dataset(tmp_path / "train.jsonl"))
    client = stack.client(team.keys["member"])
    with stack.sandbox.configured(hold_create_seconds=60):
        job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
        wait_for(
            lambda: stack.sandbox.stats()["creates_by_ftq_job_id"].get(job.id) == 1,
            timeout=60,
            what="the upstream create to arrive",
        )
        worker = _current_worker(stack)
        stack.kill(worker)
    # The upstream job runs to its end while no worker is alive to adopt it.
    sandbox = stack.sandbox_client()
    wait_for(
        lambda: (
            (found := sandbox.fine_tuning.jobs.list(metadata={"ftq_job_id": job.id}).data)
            and found[0].status == "succeeded"
        ),
        timeout=60,
        what="the upstream job to finish on its own",
    )
    _start_worker(stack)
    _finished(stack, team, job.id)
    assert stack.sandbox.stats()["creates_by_ftq_job_id"][job.id] == 1
    _assert_complete_success(stack, team, job.id)


def test_a_create_answered_with_a_finished_job_keeps_everything(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    file_id = _upload(stack, team, write_chat_dataset(tmp_path / "train.jsonl"))
    client = stack.client(team.keys["member"])
    # Held long enough for the whole sandbox lifecycle: the create's answer is terminal, and
    # the first poll never sees validating_files, queued or running.
    with stack.sandbox.configured(hold_create_seconds=6):
        job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
        _finished(stack, team, job.id)
    _assert_complete_success(stack, team, job.id)


def test_an_upload_cut_off_at_the_provider_is_reused_by_the_next_job(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    data = write_chat_dataset(tmp_path / "train.jsonl")
    # Different bytes from the other tests' datasets: this content is new to the account.
    data.write_text(data.read_text() + data.read_text().splitlines()[0] + "\n")
    first = _upload(stack, team, data)
    second = _upload(stack, team, data)  # same content, another ftq file
    client = stack.client(team.keys["member"])

    def copies() -> int:
        # Uploads the provider processed (the request log, not GET /v1/files: that path is
        # faulted below too).
        return len(stack.sandbox.requests(method="POST", path="/v1/files"))

    before = copies()
    # The provider stores each upload and the connection dies before ftq hears its id.
    with stack.sandbox.configured(drop_rate=1.0, drop_mode="after", fault_paths="^/v1/files$"):
        doomed = client.fine_tuning.jobs.create(model=MODEL, training_file=first)
        wait_for(lambda: copies() > before, timeout=60, what="an upload to reach the provider")
        client.fine_tuning.jobs.cancel(doomed.id)
    stored = copies()
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=second)
    done = _finished(stack, team, job.id)
    assert done.status == "succeeded", done.error
    assert copies() == stored, "the second job uploaded the same content again"


def test_an_upload_the_provider_lost_is_sent_again(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    file_id = _upload(stack, team, write_chat_dataset(tmp_path / "train.jsonl"))
    client = stack.client(team.keys["member"])
    first = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    assert _finished(stack, team, first.id).status == "succeeded"
    upstream_file = _job_row(stack, first.id).upstream_training_file_id
    stack.sandbox_client().files.delete(upstream_file)  # e.g. deleted in the provider account

    again = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    done = _finished(stack, team, again.id)
    assert done.status == "succeeded", done.error
    row = _job_row(stack, again.id)
    assert row.upstream_training_file_id != upstream_file
    messages = [e.message for e in client.fine_tuning.jobs.list_events(again.id, limit=100).data]
    assert any("no longer has ftq's earlier upload" in m for m in messages), messages


def test_a_lost_result_import_is_reconciled(stack: Stack, team: Team, tmp_path: Path) -> None:
    file_id = _upload(stack, team, write_chat_dataset(tmp_path / "train.jsonl"))
    client = stack.client(team.keys["member"])
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    assert _finished(stack, team, job.id).status == "succeeded"
    wait_for(lambda: not _job_row(stack, job.id).results_pending, timeout=30, what="import")
    upstream = stack.sandbox_client().fine_tuning.jobs.retrieve(
        _job_row(stack, job.id).upstream_job_id
    )
    assert upstream.result_files

    def lose_the_import(session: Any) -> None:
        # As if the import message was lost: upstream ids again, pending, and stale.
        from service.jobs.models import FineTuningJob

        row = session.get(FineTuningJob, job.id)
        row.result_files = list(upstream.result_files)
        row.results_pending = True
        row.updated_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        session.add(row)

    stack.db(lose_the_import)
    wait_for(
        lambda: not _job_row(stack, job.id).results_pending,
        timeout=30,
        what="the reconciler to import the result files",
    )
    for result in client.fine_tuning.jobs.retrieve(job.id).result_files:
        assert client.files.retrieve(result).purpose == "fine-tune-results"


def test_a_cancel_shows_at_once_and_reaches_the_provider(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    file_id = _upload(stack, team, write_chat_dataset(tmp_path / "train.jsonl"))
    client = stack.client(team.keys["member"])
    with stack.sandbox.configured(job_speed=0.5):  # slow enough to cancel while it runs
        job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
        wait_for(
            lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running",
            timeout=60,
            what="the job to run",
        )
        answer = client.fine_tuning.jobs.cancel(job.id)
        assert answer.status in ("running", "cancelled")
        assert answer.model_extra["cancel_requested"] is True
        done = _finished(stack, team, job.id, timeout=60)
    assert done.status == "cancelled"
    cancels = stack.sandbox.requests(
        method="POST", path="/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"
    )
    assert len(cancels) >= 1


def test_a_file_used_by_an_unfinished_job_cannot_be_deleted(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    file_id = _upload(stack, team, write_chat_dataset(tmp_path / "train.jsonl"))
    client = stack.client(team.keys["member"])
    with stack.sandbox.configured(job_speed=0.5):
        job = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
        status, body, _ = call(stack, "DELETE", f"/v1/files/{file_id}", team.keys["member"])
        assert status == 409, body
        error = body["error"]
        assert error["code"] == "file_in_use" and job.id in error["message"]
        assert client.files.retrieve(file_id).id == file_id  # nothing was deleted
        client.fine_tuning.jobs.cancel(job.id)
        _finished(stack, team, job.id, timeout=60)
    assert client.files.delete(file_id).deleted


def _current_worker(stack: Stack) -> str:
    names = [n for n in stack.group.children if n.startswith("worker")]
    return names[-1]


def _start_worker(stack: Stack) -> None:
    stack.start_worker(f"worker{next(_workers)}")
