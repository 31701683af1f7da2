"""The job's state machine: the one place where ``status`` and ``stage`` change.

The rule: every write of a job's ``status`` or ``stage`` is a named transition from the
table below, applied by ``move`` in the caller's transaction together with what the change
causes (the job's sequence number, its webhook outbox row, its event). A transition from a
stage it does not list, or to a status that may not follow the current one, raises
``IllegalTransition``: a bug in the caller, never silently stored.

``status`` is OpenAI's enum, which SDK clients parse; ``stage`` is ftq's finer position
(waiting for a slot, uploading, tracking, evaluating…). Providers' own statuses never reach
the row: ``observe`` maps them onto transitions, and a status the provider passed through
between two looks (``queued`` on the way to ``running``) is still recorded and notified, in
order. A terminal status, wherever it is seen, ends through ``finish``, which the runners
call only after they have synced everything the provider has (events, checkpoints, model,
tokens, result files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlmodel import Session

from service.db import utcnow
from service.dispatch import enqueue
from service.jobs.models import TERMINAL_STATUSES, FineTuningJob, JobStage, JobStatus
from service.jobs.serializers import job_object
from service.jobs.transitions import add_event
from service.webhooks.outbox import record_event

log = structlog.get_logger(__name__)

S = JobStage
ACTIVE = frozenset(set(JobStage) - {JobStage.done})


class IllegalTransition(RuntimeError):
    """A transition the table does not allow from the job's current state."""


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[JobStage]
    stage: JobStage | None = None  # None: the stage does not change
    status: JobStatus | None = None  # None: the status does not change


def _t(name: str, sources: set[JobStage], stage: JobStage | None, status: JobStatus | None):
    return Transition(name, frozenset(sources), stage, status)


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        # Before the provider: reports, the fair queue, admission.
        _t("await_reports", {S.pending, S.validating}, S.validating, None),
        _t(
            "enqueue", {S.pending, S.validating, S.waiting, S.creating}, S.waiting, JobStatus.queued
        ),
        _t("admit_upstream", {S.pending, S.validating, S.waiting}, S.uploading, None),
        _t("admit_local", {S.pending, S.validating, S.waiting}, S.training, JobStatus.queued),
        # The upstream runner: upload, create exactly once, then follow.
        _t("begin_create", {S.uploading}, S.creating, None),
        _t("reupload", {S.creating}, S.uploading, None),
        _t("track", {S.uploading, S.creating}, S.tracking, None),
        _t("upstream_queued", {S.tracking}, None, JobStatus.queued),
        _t("upstream_running", {S.tracking}, None, JobStatus.running),
        _t("upstream_paused", {S.tracking}, None, JobStatus.paused),
        # The local runner: a training worker holds the job.
        _t("start_training", {S.training}, None, JobStatus.running),
        # Endings. ``finish`` picks evaluate-or-done for a success.
        _t("succeed", {S.tracking, S.training}, S.done, JobStatus.succeeded),
        _t("succeed_and_evaluate", {S.tracking, S.training}, S.evaluating, JobStatus.succeeded),
        _t("record_evaluation", {S.evaluating}, S.done, None),
        _t("fail", set(ACTIVE - {S.evaluating}), S.done, JobStatus.failed),
        _t("cancel", set(ACTIVE - {S.evaluating}), S.done, JobStatus.cancelled),
    )
}

# Which OpenAI status may follow which. Backwards steps are not transitions: a provider that
# shows ``validating_files`` again for a job ftq already queued is not news to the team.
STATUS_NEXT: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.validating_files: frozenset(set(JobStatus) - {JobStatus.validating_files}),
    JobStatus.queued: frozenset(set(JobStatus) - {JobStatus.validating_files, JobStatus.queued}),
    JobStatus.running: frozenset(
        {JobStatus.paused, JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
    ),
    JobStatus.paused: frozenset(
        {
            JobStatus.queued,
            JobStatus.running,
            JobStatus.succeeded,
            JobStatus.failed,
            JobStatus.cancelled,
        }
    ),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}

# What a status implies the job passed through: a job first seen ``running`` was ``queued``.
_IMPLIED: dict[JobStatus, tuple[JobStatus, ...]] = {
    JobStatus.running: (JobStatus.queued,),
    JobStatus.paused: (JobStatus.queued,),
    JobStatus.succeeded: (JobStatus.queued, JobStatus.running),
}

# Statuses that produce a webhook event (validating_files is the initial state).
NOTIFIED_STATUSES = frozenset({"queued", "running", "paused", "succeeded", "failed", "cancelled"})

# Providers' names for OpenAI's statuses (Azure's older API, Together, vLLM-style servers).
_ALIASES = {
    "created": JobStatus.validating_files,
    "pending": JobStatus.queued,
    "notrunning": JobStatus.queued,
    "queued": JobStatus.queued,
    "uploading": JobStatus.validating_files,
    "validating_files": JobStatus.validating_files,
    "running": JobStatus.running,
    "compressing": JobStatus.running,
    "paused": JobStatus.paused,
    "succeeded": JobStatus.succeeded,
    "completed": JobStatus.succeeded,
    "failed": JobStatus.failed,
    "error": JobStatus.failed,
    "cancelled": JobStatus.cancelled,
    "canceled": JobStatus.cancelled,
    "cancel_requested": JobStatus.running,
}


def map_status(raw: str | None) -> JobStatus | None:
    """The OpenAI status a provider's status means, or None for one we do not know."""
    if raw is None:
        return None
    return _ALIASES.get(raw.replace(" ", "").lower())


def allowed(job: FineTuningJob, name: str) -> bool:
    transition = TRANSITIONS[name]
    if job.stage not in transition.sources:
        return False
    target = transition.status
    return target is None or target == job.status or target in STATUS_NEXT[JobStatus(job.status)]


def move(
    session: Session,
    job: FineTuningJob,
    name: str,
    *,
    message: str | None = None,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> None:
    """Apply transition ``name`` to ``job`` (row locked by the caller) or raise."""
    transition = TRANSITIONS[name]
    if not allowed(job, name):
        raise IllegalTransition(
            f"{name} is not allowed for job {job.id} in {job.status}/{job.stage}"
        )
    if transition.status is not None and transition.status != job.status:
        for status in (*_IMPLIED.get(transition.status, ()), transition.status):
            if status != job.status and status in STATUS_NEXT[JobStatus(job.status)]:
                _set_status(session, job, status)
    if transition.stage is not None:
        job.stage = transition.stage
    if transition.stage is JobStage.done:
        job.finished_at = job.finished_at or utcnow()
        job.next_poll_at = None
        job.lease_owner = None
        job.lease_expires_at = None
    job.updated_at = utcnow()
    session.add(job)
    if message:
        add_event(session, job, message, level=level, data=data)


def _set_status(session: Session, job: FineTuningJob, status: JobStatus) -> None:
    job.status = status
    job.sequence += 1
    job.updated_at = utcnow()
    if status in TERMINAL_STATUSES:
        job.finished_at = job.finished_at or utcnow()
    session.add(job)
    if status in NOTIFIED_STATUSES:
        record_event(
            session,
            team_id=job.team_id,
            event_type=f"fine_tuning.job.{status}",
            object_id=job.id,
            sequence=job.sequence,
            data=job_object(job),
        )


def observe(session: Session, job: FineTuningJob, raw_status: str | None) -> bool:
    """A non-terminal status seen at the provider while tracking; returns whether the job
    changed. Terminal statuses are not handled here: they end through ``finish``."""
    status = map_status(raw_status)
    if status is None:
        log.warning("unknown_provider_status", job_id=job.id, status=raw_status)
        return False
    name = {
        JobStatus.queued: "upstream_queued",
        JobStatus.running: "upstream_running",
        JobStatus.paused: "upstream_paused",
    }.get(status)
    if name is None or status == job.status:
        return False
    if not allowed(job, name):
        # e.g. running -> queued at the provider: not a step the team should see.
        log.info("provider_status_regression", job_id=job.id, status=raw_status, at=job.status)
        return False
    move(session, job, name)
    return True


@dataclass(frozen=True)
class Outcome:
    """Everything a finished job's provider (or trainer) has to say at the end."""

    status: JobStatus
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    message: str | None = None


def finish(session: Session, job: FineTuningJob, outcome: Outcome) -> None:
    """End the job. Runners call this after syncing events, checkpoints and result files, so
    a terminal status seen at create, at adoption or at a poll ends the job the same way."""
    if outcome.status == JobStatus.succeeded:
        job.fine_tuned_model = outcome.fine_tuned_model or job.fine_tuned_model
        job.trained_tokens = outcome.trained_tokens or job.trained_tokens
        name = "succeed_and_evaluate" if job.evaluation_config else "succeed"
    elif outcome.status == JobStatus.failed:
        job.error = outcome.error or job.error
        name = "fail"
    elif outcome.status == JobStatus.cancelled:
        name = "cancel"
    else:
        raise IllegalTransition(f"{outcome.status} is not an ending")
    if outcome.trained_tokens and job.trained_tokens is None:
        job.trained_tokens = outcome.trained_tokens
    move(session, job, name, message=outcome.message, level="error" if name == "fail" else "info")
    if name == "succeed_and_evaluate":
        add_event(session, job, "Evaluating the fine-tuned model against its base model.")
        enqueue("evals.gate", job.id)


def fail(
    session: Session, job: FineTuningJob, error: dict[str, Any], *, message: str | None = None
) -> None:
    finish(
        session,
        job,
        Outcome(JobStatus.failed, error=error, message=message or error.get("message")),
    )


def cancel(session: Session, job: FineTuningJob, message: str) -> None:
    finish(session, job, Outcome(JobStatus.cancelled, message=message))


def record_evaluation(session: Session, job: FineTuningJob, evaluation: dict[str, Any]) -> None:
    """The gate's verdict: stored on the job, notified as ``fine_tuning.job.evaluated``."""
    job.evaluation = evaluation
    verdict = evaluation.get("verdict")
    move(session, job, "record_evaluation", message=f"Evaluation finished: {verdict}.")
    job.sequence += 1
    record_event(
        session,
        team_id=job.team_id,
        event_type="fine_tuning.job.evaluated",
        object_id=job.id,
        sequence=job.sequence,
        data=job_object(job),
    )
