"""Submitting a job to its provider exactly once.

Each step commits its state before the side effect it guards: ``uploading`` before the
upload, ``creating`` before the create. A task that dies anywhere is redelivered (or
re-enqueued by the reconciler once its lease lapses) and resumes from the committed stage:
uploads are reused by content hash per provider account, and a create is always preceded
by a lookup of the upstream job carrying our ``ftq_job_id`` metadata tag.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from service.config import get_settings
from service.db import session_scope, utcnow
from service.errors import BudgetExceeded
from service.files.models import File, ProviderFile
from service.files.service import file_path
from service.jobs import budgets, capacity, failures
from service.jobs.models import SUBMISSION_STAGES, FineTuningJob, JobStage, JobStatus
from service.jobs.transitions import add_event, set_status
from service.providers.base import CreateJobRequest, ErrorKind, Provider, ProviderError, UpstreamJob
from service.providers.registry import provider_for_account

log = structlog.get_logger(__name__)


class RetryLater(Exception):
    """Transient trouble: the task should run again after ``seconds``."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


@dataclass(frozen=True)
class Claimed:
    job_id: str
    stage: str
    attempts: int
    account: str


def _owned(job_id: str, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(FineTuningJob.id == job_id, FineTuningJob.lease_owner == owner)  # type: ignore[arg-type]


def claim_for_submission(job_id: str, owner: str) -> Claimed | None:
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        result = session.execute(
            sa.update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,  # type: ignore[arg-type]
                FineTuningJob.stage.in_([s.value for s in SUBMISSION_STAGES]),  # type: ignore[attr-defined]
                sa.or_(
                    FineTuningJob.lease_expires_at.is_(None),  # type: ignore[union-attr]
                    FineTuningJob.lease_expires_at < now,  # type: ignore[operator]
                ),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=settings.lease_seconds),
                attempts=FineTuningJob.attempts + 1,
                updated_at=now,
            )
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            return None
        job = session.get(FineTuningJob, job_id, populate_existing=True)
        assert job is not None
        if job.cancel_requested and job.stage != JobStage.creating:
            set_status(session, job, JobStatus.cancelled)
            add_event(session, job, "Job cancelled before it reached the provider.")
            return None
        if job.attempts > settings.max_submit_attempts:
            job.error = failures.job_error(
                failures.WORKER_LOST, f"Submission was attempted {job.attempts - 1} times."
            )
            set_status(session, job, JobStatus.failed)
            add_event(
                session, job, "Submission abandoned after repeated worker failures.", level="error"
            )
            return None
        return Claimed(job.id, job.stage, job.attempts, job.account)


def _release(session: Session, job_id: str, owner: str) -> None:
    session.execute(
        sa.update(FineTuningJob)
        .where(_owned(job_id, owner))
        .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow())
    )


def _fail(job_id: str, owner: str, error: ProviderError, what: str) -> None:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner:
            return
        job.error = failures.job_error_from_provider(error)
        job.lease_owner = None
        job.lease_expires_at = None
        set_status(session, job, JobStatus.failed)
        add_event(session, job, f"{what} failed: {error.message}", level="error")


def _retry_later(
    job_id: str, owner: str, error: ProviderError, what: str, attempts: int
) -> RetryLater:
    if error.kind == ErrorKind.rate_limited:
        seconds = error.retry_after or 30.0
    else:
        seconds = min(2.0 ** min(attempts, 6), 60.0)
    with session_scope() as session:
        _release(session, job_id, owner)
    log.warning("submission_retry", job_id=job_id, step=what, error=error.message, seconds=seconds)
    return RetryLater(seconds, f"{what}: {error.message}")


def _ensure_uploaded(provider: Provider, file_id: str, *, look_first: bool) -> str:
    with session_scope() as session:
        record = session.get(File, file_id)
        assert record is not None
        known = session.exec(
            select(ProviderFile).where(
                ProviderFile.account == provider.account, ProviderFile.sha256 == record.sha256
            )
        ).first()
    if known:
        return known.upstream_file_id
    # Files carry no metadata upstream, so the ftq file id rides in the filename; a retry
    # after a crash mid-upload finds the earlier upload instead of sending it again.
    marker = f"ftq-{record.id}"
    upstream_id = provider.find_uploaded_file(marker) if look_first else None
    if upstream_id is None:
        upstream_id = provider.upload_file(file_path(record), f"{marker}.jsonl")
    try:
        with session_scope() as session:
            session.add(
                ProviderFile(
                    account=provider.account, sha256=record.sha256, upstream_file_id=upstream_id
                )
            )
    except IntegrityError:
        # Another job uploaded the same bytes concurrently; use the row that won.
        with session_scope() as session:
            winner = session.exec(
                select(ProviderFile).where(
                    ProviderFile.account == provider.account, ProviderFile.sha256 == record.sha256
                )
            ).one()
            return winner.upstream_file_id
    return upstream_id


def _upload_files(claim: Claimed, owner: str, provider: Provider) -> bool:
    with session_scope() as session:
        result = session.execute(
            sa.update(FineTuningJob)
            .where(_owned(claim.job_id, owner))
            .values(stage=JobStage.uploading, updated_at=utcnow())
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            return False
        job = session.get(FineTuningJob, claim.job_id, populate_existing=True)
        assert job is not None
        training_id = job.converted_training_file_id or job.training_file_id
        validation_id = job.validation_file_id
    look_first = claim.attempts > 1
    upstream_training = _ensure_uploaded(provider, training_id, look_first=look_first)
    upstream_validation = (
        _ensure_uploaded(provider, validation_id, look_first=look_first) if validation_id else None
    )
    with session_scope() as session:
        job = session.get(FineTuningJob, claim.job_id, with_for_update=True)
        if job is None or job.lease_owner != owner or job.stage != JobStage.uploading:
            return False
        job.upstream_training_file_id = upstream_training
        job.upstream_validation_file_id = upstream_validation
        job.stage = JobStage.creating
        job.updated_at = utcnow()
        session.add(job)
        add_event(session, job, f"Training file uploaded to the provider as {upstream_training}.")
    return True


def _create_upstream(claim: Claimed, owner: str, provider: Provider) -> UpstreamJob:
    with session_scope() as session:
        job = session.get(FineTuningJob, claim.job_id)
        assert job is not None
        request = CreateJobRequest(
            ftq_job_id=job.id,
            model=job.model,
            training_file=job.upstream_training_file_id or "",
            validation_file=job.upstream_validation_file_id,
            method=job.method,
            hyperparameters=None if job.method else job.hyperparameters,
            suffix=job.suffix,
            seed=job.seed,
            metadata=dict(job.user_metadata or {}),
            integrations=job.integrations,
        )
    # The lookup is skipped only on a first attempt that moved to "creating" itself: a create
    # can only ever have been sent from that stage, committed before the call.
    first_try = claim.attempts == 1 and claim.stage != JobStage.creating
    existing = None if first_try else provider.find_job(claim.job_id)
    if existing is not None:
        log.info("upstream_job_adopted", job_id=claim.job_id, upstream_job_id=existing.id)
        return existing
    # The create's timeout stays well inside the lease, so no second worker can start a
    # lookup-then-create while this one may still be waiting for its answer.
    timeout = max(1.0, get_settings().lease_seconds * 0.5)
    return provider.create_job(request, timeout=timeout)


def _record_upstream(job_id: str, owner: str, upstream: UpstreamJob) -> None:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        assert job is not None
        if job.upstream_job_id is None:
            # Recorded even if our lease lapsed: the upstream job exists and is ours.
            job.upstream_job_id = upstream.id
            add_event(session, job, f"Submitted to the provider as {upstream.id}.")
        if job.stage in SUBMISSION_STAGES:
            job.stage = JobStage.tracking
        job.upstream_status = upstream.status
        if upstream.hyperparameters:
            job.hyperparameters = upstream.hyperparameters
        job.lease_owner = None
        job.lease_expires_at = None
        job.poll_interval_seconds = None
        job.next_poll_at = utcnow()  # first poll right away: it syncs status and events
        job.updated_at = utcnow()
        session.add(job)
        if upstream.status not in ("validating_files",):
            set_status(session, job, upstream.status)


CHAT_INCAPABLE_MODELS = ("babbage-002", "davinci-002")


def _is_chat_model(model: str) -> bool:
    base = model.split(":")[1] if model.startswith("ft:") else model
    return not base.startswith(CHAT_INCAPABLE_MODELS)


def _convert_for_chat(session: Session, job: FineTuningJob, training: File) -> None:
    """The article's prompt/completion data given for a chat model: convert instead of
    letting the provider reject it, and say so in the job and in the file's report."""
    from service.files.derived import convert_to_chat

    converted = convert_to_chat(session, job.team_id, training.id)
    job.converted_training_file_id = converted.id
    add_event(
        session,
        job,
        f"Training file {training.id} is prompt/completion data; {job.model} is a chat model, "
        f"so ftq converted it to chat format as {converted.id}.",
        level="warn",
    )
    report = dict(training.report or {})
    report["findings"] = [
        *report.get("findings", []),
        {
            "line": None,
            "code": "converted_to_chat",
            "severity": "warning",
            "message": f"Converted to chat for {job.model} (job {job.id}) as {converted.id}.",
            "suggestion": "Upload chat-format data (messages) to control the conversion.",
            "file": "training",
        },
    ]
    counts = dict(report.get("counts_by_code", {}))
    counts["converted_to_chat"] = counts.get("converted_to_chat", 0) + 1
    report["counts_by_code"] = counts
    training.report = report
    session.add(training)


def _gate(job_id: str) -> bool:
    """Validation, conversion and capacity; True when the job may go to the provider now."""
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.stage in (
            JobStage.tracking,
            JobStage.training,
            JobStage.done,
            JobStage.waiting,
        ):
            return False
        if job.stage in (JobStage.uploading, JobStage.creating):
            return True  # a started submission resumes where it stopped
        if job.cancel_requested:
            set_status(session, job, JobStatus.cancelled)
            add_event(session, job, "Job cancelled before it reached the provider.")
            return False
        files = [
            f
            for f in (
                session.get(File, job.training_file_id),
                session.get(File, job.validation_file_id) if job.validation_file_id else None,
            )
            if f is not None
        ]
        pending = [f for f in files if f.validation_status in ("pending", "running")]
        if pending:
            if job.stage != JobStage.validating:
                job.stage = JobStage.validating
                job.updated_at = utcnow()
                session.add(job)
                add_event(session, job, f"Waiting for the pre-flight report of {pending[0].id}.")
            return False
        blocked = [f for f in files if f.verdict == "block"]
        if blocked:
            record = blocked[0]
            errors = (record.report or {}).get("counts_by_severity", {}).get("error", 0)
            job.error = failures.job_error(
                failures.DATA_FORMAT,
                f"File {record.id} failed ftq's pre-flight checks with {errors} error(s); "
                f"see GET /v1/files/{record.id}/validation.",
                param="training_file" if record.id == job.training_file_id else "validation_file",
            )
            set_status(session, job, JobStatus.failed)
            add_event(session, job, job.error["message"], level="error")
            return False
        training = files[0]
        if job.estimated_cost_usd is None and job.provider != "local":
            # The report arrived after the create: the budget hold is taken now.
            estimate = budgets.estimate_cost(training, job.model, budgets.job_epochs(job))
            if estimate is not None:
                try:
                    budgets.reserve(session, job, estimate)
                except BudgetExceeded as refused:
                    job.error = {
                        "code": "budget_exceeded",
                        "message": refused.message,
                        "param": None,
                    }
                    set_status(session, job, JobStatus.failed)
                    add_event(session, job, refused.message, level="error")
                    return False
        if (
            training.format == "prompt_completion"
            and _is_chat_model(job.model)
            and job.converted_training_file_id is None
        ):
            _convert_for_chat(session, job, training)
        capacity.lock_account(session, job.account)
        if capacity.others_waiting(session, job) or not capacity.has_slot(session, job):
            capacity.send_to_queue(
                session,
                job,
                "Waiting in ftq's queue: the team or provider account is at its limit.",
            )
            return False
        # Taking the slot now, under the account lock, so concurrent admissions count it.
        job.stage = JobStage.uploading
        job.admitted_at = utcnow()
        job.updated_at = utcnow()
        session.add(job)
        return True


def _requeue_after_limit(job_id: str, owner: str, error: ProviderError) -> None:
    settings = get_settings()
    daily = error.code == "daily_rate_limit_exceeded"
    if daily:
        delay = max(settings.daily_cap_retry_seconds, error.retry_after or 0)
    else:
        delay = error.retry_after or settings.concurrency_retry_seconds
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner:
            return
        what = "daily job cap" if daily else "concurrent job limit"
        capacity.send_to_queue(
            session,
            job,
            f"The provider's {what} is reached ({error.message}); ftq retries in {int(delay)} s.",
            not_before=utcnow() + dt.timedelta(seconds=delay),
        )


def _is_local(job_id: str) -> bool:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id)
        return job is not None and job.provider == "local"


def submit(job_id: str, owner: str) -> None:
    """Upload the job's files and create its upstream job; safe to run any number of times."""
    if not _gate(job_id):
        return
    if _is_local(job_id):
        # ftq trains it itself: nothing to upload, no upstream job to create.
        from service.providers.local import jobs as local_jobs

        local_jobs.start(job_id)
        return
    claim = claim_for_submission(job_id, owner)
    if claim is None:
        return
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        provider = provider_for_account(claim.account)
    except LookupError as exc:
        _fail(job_id, owner, ProviderError(str(exc), kind=ErrorKind.permanent), "Provider lookup")
        return
    what = "Upload"
    try:
        uploading = claim.stage in (JobStage.pending, JobStage.validating, JobStage.uploading)
        if uploading and not _upload_files(claim, owner, provider):
            return
        what = "Job creation"
        upstream = _create_upstream(claim, owner, provider)
    except ProviderError as error:
        if what == "Job creation" and failures.is_capacity_limit(error):
            _requeue_after_limit(job_id, owner, error)
            return
        if error.retryable:
            raise _retry_later(job_id, owner, error, what, claim.attempts) from error
        _fail(job_id, owner, error, what)
        return
    _record_upstream(job_id, owner, upstream)
