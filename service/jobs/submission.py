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
from service.files.models import File, ProviderFile
from service.files.service import file_path
from service.jobs import failures
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
        training_id, validation_id = job.training_file_id, job.validation_file_id
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
    existing = provider.find_job(claim.job_id)
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


def submit(job_id: str, owner: str) -> None:
    """Upload the job's files and create its upstream job; safe to run any number of times."""
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
        uploading = claim.stage in (JobStage.pending, JobStage.uploading)
        if uploading and not _upload_files(claim, owner, provider):
            return
        what = "Job creation"
        upstream = _create_upstream(claim, owner, provider)
    except ProviderError as error:
        if error.retryable:
            raise _retry_later(job_id, owner, error, what, claim.attempts) from error
        _fail(job_id, owner, error, what)
        return
    _record_upstream(job_id, owner, upstream)
