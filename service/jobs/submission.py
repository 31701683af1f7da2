"""Submitting a job to its provider exactly once (the upstream runner's first half).

Each step commits its state before the side effect it guards: ``uploading`` before the
upload, ``creating`` before the create. A task that dies anywhere is redelivered (or
re-enqueued by the reconciler once its lease lapses) and resumes from the committed stage:
uploads are reused by content hash per provider account, and a create is always preceded
by a lookup of the upstream job carrying our ``ftq_job_id`` metadata tag.

An upload is announced before it starts (a ``provider_files`` row without an upstream id)
and named after the content hash, so a worker killed mid-upload leaves a copy that the next
job with the same content finds at the provider instead of uploading it again. An upload the
provider has since lost (deleted in the account, a restarted upstream) is dropped from the
cache and sent again; the data is never blamed for the provider's state.

Whatever the create answers — or whatever a retry adopts — the job only moves to
``tracking`` here; its first poll, enqueued at once, records the upstream status, events,
checkpoints and, for a job already finished, its ending.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service import leases
from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.files.models import File, ProviderFile
from service.files.service import file_path
from service.jobs import capacity, failures, lifecycle, poll_groups
from service.jobs.models import SUBMISSION_STAGES, FineTuningJob, JobStage
from service.jobs.transitions import add_event
from service.providers.base import (
    CreateJobRequest,
    ErrorKind,
    FineTuningProvider,
    ProviderError,
    UpstreamJob,
)
from service.providers.registry import fine_tuning_provider_for_account

log = structlog.get_logger(__name__)


class RetryLater(Exception):
    """Transient trouble: the task should run again after ``seconds``."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


class _StaleUpload(Exception):
    """The provider no longer has a file ftq uploaded earlier."""


class _UploadInFlight(Exception):
    """Another job is uploading the same content right now: wait for it, do not duplicate."""


@dataclass(frozen=True)
class Claimed:
    job_id: str
    stage: str  # the stage the job was in when claimed (before any move in the claim)
    attempts: int
    account: str
    # Set when the claim itself moved the job to ``creating`` (every upload already known):
    # the create to send, built from the row the claim read.
    request: CreateJobRequest | None = None


def upload_marker(sha256: str) -> str:
    """The upstream filename prefix of an upload: by content, so any job finds it."""
    return f"ftq-{sha256[:40]}"


def claim_for_submission(job_id: str, owner: str) -> Claimed | None:
    settings = get_settings()
    with session_scope() as session:
        taken = leases.claim(
            session,
            FineTuningJob,
            job_id,
            owner,
            settings.lease_seconds,
            where=(col(FineTuningJob.stage).in_([s.value for s in SUBMISSION_STAGES]),),
            values={"attempts": FineTuningJob.attempts + 1, "updated_at": utcnow()},
        )
        if not taken:
            return None
        job = session.get(FineTuningJob, job_id, populate_existing=True)
        assert job is not None
        if job.cancel_requested and job.stage != JobStage.creating:
            lifecycle.cancel(session, job, "Job cancelled before it reached the provider.")
            return None
        if job.attempts > settings.max_submit_attempts:
            lifecycle.fail(
                session,
                job,
                failures.job_error(
                    failures.WORKER_LOST, f"Submission was attempted {job.attempts - 1} times."
                ),
                message="Submission abandoned after repeated worker failures.",
            )
            return None
        stage = job.stage
        request = None
        if stage == JobStage.uploading and _uploads_known(session, job):
            # The usual case (the same data submitted again): nothing to upload, so the
            # job moves to ``creating`` in this same transaction, committed before the
            # create as always, and the create is built from the row already read.
            lifecycle.move(
                session,
                job,
                "begin_create",
                message=f"Training file already at the provider as "
                f"{job.upstream_training_file_id}.",
            )
            request = _create_request(job)
        return Claimed(job.id, stage, job.attempts, job.account, request)


def _uploads_known(session: Session, job: FineTuningJob) -> bool:
    """Fill in the job's upstream file ids when the provider already has every one of its
    files (by content hash); False when one still has to be uploaded."""
    file_ids = [job.converted_training_file_id or job.training_file_id, job.validation_file_id]
    wanted = [file_id for file_id in file_ids if file_id]
    rows = session.execute(
        sa.select(col(File.id), col(ProviderFile.upstream_file_id))
        .join(ProviderFile, col(ProviderFile.sha256) == col(File.sha256))
        .where(col(File.id).in_(wanted), col(ProviderFile.account) == job.account)
    ).all()
    known = {file_id: upstream for file_id, upstream in rows if upstream}
    if any(file_id not in known for file_id in wanted):
        return False
    job.upstream_training_file_id = known[wanted[0]]
    job.upstream_validation_file_id = known.get(job.validation_file_id or "")
    return True


def _create_request(job: FineTuningJob) -> CreateJobRequest:
    return CreateJobRequest(
        ftq_job_id=job.id,
        model=job.model,
        training_file=job.upstream_training_file_id or "",
        validation_file=job.upstream_validation_file_id,
        method=job.method,
        hyperparameters=None if job.method else job.hyperparameters,
        suffix=job.suffix,
        seed=job.seed,
        metadata=poll_groups.tagged_metadata(job.id, dict(job.user_metadata or {})),
        integrations=job.integrations,
    )


def _fail(job_id: str, owner: str, error: ProviderError, what: str) -> None:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner:
            return
        lifecycle.fail(
            session,
            job,
            failures.job_error_from_provider(error),
            message=f"{what} failed: {error.message}",
        )


def _retry_later(
    job_id: str, owner: str, error: ProviderError, what: str, attempts: int
) -> RetryLater:
    if error.kind == ErrorKind.rate_limited:
        seconds = error.retry_after or 30.0
    else:
        seconds = min(2.0 ** min(attempts, 6), 60.0)
    with session_scope() as session:
        leases.release(session, FineTuningJob, job_id, owner, updated_at=utcnow())
    log.warning("submission_retry", job_id=job_id, step=what, error=error.message, seconds=seconds)
    return RetryLater(seconds, f"{what}: {error.message}")


def _cached_upload(account: str, sha256: str) -> ProviderFile | None:
    with session_scope() as session:
        return session.exec(
            select(ProviderFile).where(
                ProviderFile.account == account, ProviderFile.sha256 == sha256
            )
        ).first()


def _announce_upload(account: str, sha256: str) -> bool:
    """Write the intent before the upload, so a crash leaves a trace the next job follows;
    False when another job announced the same content first (it uploads, we wait)."""
    try:
        with session_scope() as session:
            session.add(ProviderFile(account=account, sha256=sha256, upstream_file_id=None))
    except IntegrityError:
        return False
    return True


def _take_over_stale(account: str, sha256: str) -> bool:
    """Take over an announced upload older than a lease (its worker is gone)."""
    now = utcnow()
    with session_scope() as session:
        result = session.execute(
            sa.update(ProviderFile)
            .where(
                col(ProviderFile.account) == account,
                col(ProviderFile.sha256) == sha256,
                col(ProviderFile.upstream_file_id).is_(None),
                col(ProviderFile.created_at)
                < now - dt.timedelta(seconds=get_settings().lease_seconds),
            )
            .values(created_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _complete_upload(account: str, sha256: str, upstream_id: str) -> str:
    """Record ``upstream_id`` unless another upload of the same content won; returns the
    id every job should use."""
    with session_scope() as session:
        session.execute(
            sa.update(ProviderFile)
            .where(
                col(ProviderFile.account) == account,
                col(ProviderFile.sha256) == sha256,
                col(ProviderFile.upstream_file_id).is_(None),
            )
            .values(upstream_file_id=upstream_id)
        )
        row = session.exec(
            select(ProviderFile).where(
                ProviderFile.account == account, ProviderFile.sha256 == sha256
            )
        ).one()
        return row.upstream_file_id or upstream_id


def forget_upload(account: str, upstream_id: str) -> None:
    """The provider lost this upload: the next job with the same content uploads again."""
    with session_scope() as session:
        session.execute(
            sa.delete(ProviderFile).where(
                col(ProviderFile.account) == account,
                col(ProviderFile.upstream_file_id) == upstream_id,
            )
        )
    log.warning("provider_upload_lost", account=account, upstream_file_id=upstream_id)


def _ensure_uploaded(provider: FineTuningProvider, file_id: str) -> str:
    with session_scope() as session:
        record = session.get(File, file_id)
        assert record is not None
        path, sha256 = file_path(record), record.sha256
    known = _cached_upload(provider.account, sha256)
    if known is not None and known.upstream_file_id:
        return known.upstream_file_id
    marker = upload_marker(sha256)
    if known is None:
        if not _announce_upload(provider.account, sha256):
            raise _UploadInFlight()
        upstream_id = None
    elif _take_over_stale(provider.account, sha256):
        # Announced long ago and never completed: a worker died mid-upload, and its copy
        # may be at the provider under the content's marker.
        upstream_id = provider.find_uploaded_file(marker)
    else:
        raise _UploadInFlight()
    if upstream_id is None:
        upstream_id = provider.upload_file(path, f"{marker}.jsonl")
    return _complete_upload(provider.account, sha256, upstream_id)


def _upload_files(claim: Claimed, owner: str, provider: FineTuningProvider) -> bool:
    with session_scope() as session:
        job = session.get(FineTuningJob, claim.job_id)
        if job is None or job.lease_owner != owner or job.stage != JobStage.uploading:
            return False
        training_id = job.converted_training_file_id or job.training_file_id
        validation_id = job.validation_file_id
    upstream_training = _ensure_uploaded(provider, training_id)
    upstream_validation = _ensure_uploaded(provider, validation_id) if validation_id else None
    with session_scope() as session:
        job = session.get(FineTuningJob, claim.job_id, with_for_update=True)
        if job is None or job.lease_owner != owner or job.stage != JobStage.uploading:
            return False
        job.upstream_training_file_id = upstream_training
        job.upstream_validation_file_id = upstream_validation
        lifecycle.move(
            session,
            job,
            "begin_create",
            message=f"Training file uploaded to the provider as {upstream_training}.",
        )
    return True


def _create_upstream(claim: Claimed, owner: str, provider: FineTuningProvider) -> UpstreamJob:
    request = claim.request
    if request is None:
        with session_scope() as session:
            job = session.get(FineTuningJob, claim.job_id)
            assert job is not None
            request = _create_request(job)
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
    try:
        return provider.create_job(request, timeout=timeout)
    except ProviderError as error:
        if error.kind == ErrorKind.permanent and _lost_upload(provider, request, error):
            raise _StaleUpload() from error
        raise


def _lost_upload(
    provider: FineTuningProvider, request: CreateJobRequest, error: ProviderError
) -> bool:
    """Whether a refused create named a file the provider no longer has (then the cache is
    at fault, not the data); forgets every such upload."""
    if (
        error.param not in ("training_file", "validation_file")
        and "file" not in (error.message or "").lower()
    ):
        return False
    lost = False
    for upstream_id in (request.training_file, request.validation_file):
        if upstream_id and not provider.file_exists(upstream_id):
            forget_upload(provider.account, upstream_id)
            lost = True
    return lost


def _upload_again(job_id: str, owner: str) -> None:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner or job.stage != JobStage.creating:
            return
        job.upstream_training_file_id = None
        job.upstream_validation_file_id = None
        lifecycle.move(
            session,
            job,
            "reupload",
            message="The provider no longer has ftq's earlier upload of this data; "
            "uploading it again.",
            level="warn",
        )


def _record_upstream(job_id: str, owner: str, upstream: UpstreamJob) -> bool:
    """Remember the upstream job and hand the job to the poller; True when we still held
    the lease (then its first poll is enqueued under that lease)."""
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        assert job is not None
        if job.upstream_job_id is None:
            # Recorded even if our lease lapsed: the upstream job exists and is ours.
            job.upstream_job_id = upstream.id
            add_event(session, job, f"Submitted to the provider as {upstream.id}.")
        if job.stage in SUBMISSION_STAGES:
            lifecycle.move(session, job, "track")
        if upstream.hyperparameters:
            job.hyperparameters = upstream.hyperparameters
        ours = job.lease_owner == owner and job.stage == JobStage.tracking
        job.poll_interval_seconds = None
        job.next_poll_at = utcnow()  # due now: the next sweep reads its status
        if ours:
            # The first sync (statuses, events, checkpoints, an ending already reached) runs
            # as a poll on the polling workers, so this slot is free for the next create at
            # once. The lease is let go rather than handed over: with polls backed up, the
            # sweep still reads the job's status at its next pass (whichever comes first
            # takes the lease; the other finds it taken and does nothing).
            leases.clear(job)
            if job.cancel_requested:
                # Cancelled while the create was in flight: the provider hears it now, from
                # the submit queue, not after a backlog of polls (the job may end meanwhile).
                enqueue("jobs.poll_now", job_id)
            else:
                enqueue("jobs.poll", job_id, owner)
        session.add(job)
        return ours


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


def start(job_id: str, owner: str) -> None:
    """Upload the job's files and create its upstream job; its first sync follows as a poll."""
    claim = claim_for_submission(job_id, owner)
    if claim is None:
        return
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        provider = fine_tuning_provider_for_account(claim.account)
    except LookupError as exc:
        _fail(job_id, owner, ProviderError(str(exc), kind=ErrorKind.permanent), "Provider lookup")
        return
    what = "Upload"
    try:
        uploading = claim.request is None and claim.stage in (
            JobStage.pending,
            JobStage.validating,
            JobStage.uploading,
        )
        if uploading and not _upload_files(claim, owner, provider):
            return
        what = "Job creation"
        upstream = _create_upstream(claim, owner, provider)
    except _UploadInFlight:
        with session_scope() as session:
            # Waiting for another job's upload is not a failed attempt.
            leases.release(
                session,
                FineTuningJob,
                job_id,
                owner,
                updated_at=utcnow(),
                attempts=FineTuningJob.attempts - 1,
            )
        raise RetryLater(2.0, "the same content is being uploaded by another job") from None
    except _StaleUpload:
        _upload_again(job_id, owner)
        raise _retry_later(
            job_id,
            owner,
            ProviderError("stale upload", kind=ErrorKind.transient),
            "Upload",
            0,
        ) from None
    except ProviderError as error:
        if what == "Job creation" and failures.is_capacity_limit(error):
            _requeue_after_limit(job_id, owner, error)
            return
        if error.retryable:
            raise _retry_later(job_id, owner, error, what, claim.attempts) from error
        _fail(job_id, owner, error, what)
        return
    _record_upstream(job_id, owner, upstream)
