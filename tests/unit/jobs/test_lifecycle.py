"""The job state machine's table, enumerated: every (stage, status) a job can be in against
every named transition, plus the statuses a provider may skip between two polls."""

from __future__ import annotations

import itertools

import pytest

from service.jobs import lifecycle
from service.jobs.lifecycle import STATUS_NEXT, TRANSITIONS, IllegalTransition
from service.jobs.models import FineTuningJob, JobStage, JobStatus

# The (stage, status) pairs a job can actually be in.
REACHABLE = {
    (JobStage.pending, JobStatus.validating_files),
    (JobStage.validating, JobStatus.validating_files),
    (JobStage.waiting, JobStatus.queued),
    (JobStage.uploading, JobStatus.validating_files),
    (JobStage.uploading, JobStatus.queued),
    (JobStage.creating, JobStatus.validating_files),
    (JobStage.creating, JobStatus.queued),
    *((JobStage.tracking, s) for s in JobStatus if s not in lifecycle.TERMINAL_STATUSES),
    (JobStage.training, JobStatus.queued),
    (JobStage.training, JobStatus.running),
    (JobStage.evaluating, JobStatus.succeeded),
    *((JobStage.done, s) for s in lifecycle.TERMINAL_STATUSES),
}

# Expected outcome of each transition from each reachable state: the (stage, status) after
# it, or None where it must raise.
EXPECTED: dict[str, dict[tuple[JobStage, JobStatus], tuple[JobStage, JobStatus] | None]] = {}


def _expect(name: str, stage: JobStage, status: JobStatus) -> tuple[JobStage, JobStatus] | None:
    t = TRANSITIONS[name]
    if stage not in t.sources:
        return None
    target = t.status or status
    if target != status and target not in STATUS_NEXT[status]:
        return None
    return (t.stage or stage, target)


@pytest.fixture
def outbox(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The outbox rows a transition writes (pure: no database)."""
    written: list[tuple[str, int]] = []

    def record_event(session, *, team_id, event_type, object_id, sequence, data):
        written.append((event_type, sequence))

    monkeypatch.setattr(lifecycle, "record_event", record_event)
    monkeypatch.setattr(lifecycle, "add_event", lambda *a, **k: None)
    monkeypatch.setattr(lifecycle, "enqueue", lambda *a, **k: written.append((a[0], -1)))
    return written


class _Session:
    def add(self, _: object) -> None:
        pass


def _job(stage: JobStage, status: JobStatus) -> FineTuningJob:
    return FineTuningJob(
        id="ftjob-test",
        team_id="team",
        model="gpt-4o-mini-2024-07-18",
        training_file_id="file-x",
        seed=1,
        account="acct",
        stage=stage,
        status=status,
    )


@pytest.mark.parametrize(
    ("name", "stage", "status"),
    [(n, st, su) for n in TRANSITIONS for st, su in sorted(REACHABLE)],
)
def test_every_transition_from_every_state(
    name: str, stage: JobStage, status: JobStatus, outbox: list
) -> None:
    job = _job(stage, status)
    expected = _expect(name, stage, status)
    if expected is None:
        with pytest.raises(IllegalTransition):
            lifecycle.move(_Session(), job, name)  # type: ignore[arg-type]
        assert (job.stage, job.status) == (stage, status)
        assert outbox == []
        return
    lifecycle.move(_Session(), job, name)  # type: ignore[arg-type]
    assert (job.stage, job.status) == expected
    assert (job.stage, job.status) in REACHABLE or job.stage == JobStage.done


def test_reachable_states_are_closed_under_the_table() -> None:
    for name, (stage, status) in itertools.product(TRANSITIONS, REACHABLE):
        after = _expect(name, stage, status)
        assert after is None or after in REACHABLE, (name, stage, status, after)


def test_terminal_states_allow_nothing() -> None:
    for name, status in itertools.product(TRANSITIONS, lifecycle.TERMINAL_STATUSES):
        assert _expect(name, JobStage.done, status) is None


def test_a_status_skipped_between_polls_is_still_notified_in_order(outbox: list) -> None:
    job = _job(JobStage.tracking, JobStatus.validating_files)
    lifecycle.finish(
        _Session(),  # type: ignore[arg-type]
        job,
        lifecycle.Outcome(JobStatus.succeeded, fine_tuned_model="ft:x", trained_tokens=10),
    )
    assert [e for e, _ in outbox] == [
        "fine_tuning.job.queued",
        "fine_tuning.job.running",
        "fine_tuning.job.succeeded",
    ]
    assert [s for _, s in outbox] == [1, 2, 3]
    assert job.fine_tuned_model == "ft:x" and job.trained_tokens == 10
    assert job.stage == JobStage.done and job.finished_at is not None


def test_running_seen_first_gets_its_queued_webhook(outbox: list) -> None:
    job = _job(JobStage.tracking, JobStatus.validating_files)
    assert lifecycle.observe(_Session(), job, "running")  # type: ignore[arg-type]
    assert [e for e, _ in outbox] == ["fine_tuning.job.queued", "fine_tuning.job.running"]


def test_a_failed_job_is_not_said_to_have_run(outbox: list) -> None:
    job = _job(JobStage.tracking, JobStatus.validating_files)
    lifecycle.fail(_Session(), job, {"code": "data_format", "message": "bad"})  # type: ignore[arg-type]
    assert [e for e, _ in outbox] == ["fine_tuning.job.failed"]


def test_provider_statuses_are_mapped_never_stored_raw(outbox: list) -> None:
    assert lifecycle.map_status("canceled") == JobStatus.cancelled
    assert lifecycle.map_status("notRunning") == JobStatus.queued
    assert lifecycle.map_status("mystery") is None
    job = _job(JobStage.tracking, JobStatus.queued)
    assert not lifecycle.observe(_Session(), job, "mystery")  # type: ignore[arg-type]
    assert job.status == JobStatus.queued
    job = _job(JobStage.tracking, JobStatus.running)
    assert not lifecycle.observe(_Session(), job, "queued")  # a regression is not news
    assert job.status == JobStatus.running and outbox == []


def test_success_with_a_gate_waits_for_the_evaluation(outbox: list) -> None:
    job = _job(JobStage.training, JobStatus.running)
    job.evaluation_config = {"eval_id": "eval_1"}
    lifecycle.finish(_Session(), job, lifecycle.Outcome(JobStatus.succeeded))  # type: ignore[arg-type]
    assert (job.stage, job.status) == (JobStage.evaluating, JobStatus.succeeded)
    assert ("evals.gate", -1) in outbox
    lifecycle.record_evaluation(_Session(), job, {"verdict": "promoted"})  # type: ignore[arg-type]
    assert job.stage == JobStage.done and job.evaluation == {"verdict": "promoted"}
    assert outbox[-1][0] == "fine_tuning.job.evaluated"
