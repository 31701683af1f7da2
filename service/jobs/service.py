"""Fine-tuning jobs as a team sees them: create, read, list, cancel, events, checkpoints."""

from __future__ import annotations

import secrets

import sqlalchemy as sa
import structlog
from sqlmodel import Session, select

from service import ids
from service.config import get_settings
from service.db import utcnow
from service.dispatch import enqueue
from service.errors import InvalidRequest, NotFound
from service.files.compat import check_fits
from service.files.models import File
from service.files.service import FINE_TUNE
from service.jobs import budgets
from service.jobs.models import (
    SUBMISSION_STAGES,
    TERMINAL_STATUSES,
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
    JobStage,
    JobStatus,
)
from service.jobs.schemas import CreateJobInput, requested_epochs
from service.jobs.transitions import add_event, set_status
from service.providers.registry import provider_for_team
from service.tenants import audit, limits

log = structlog.get_logger(__name__)


def _usable_file(session: Session, team_id: str, file_id: str, param: str) -> File:
    record = session.exec(
        select(File).where(File.id == file_id, File.team_id == team_id, File.deleted_at.is_(None))  # type: ignore[union-attr]
    ).first()
    if record is None:
        raise InvalidRequest(f"invalid {param} ID: {file_id}", param=param, code="file_not_found")
    if record.purpose != FINE_TUNE:
        raise InvalidRequest(
            f"File {file_id} has purpose '{record.purpose}'; fine-tuning needs 'fine-tune'.",
            param=param,
        )
    return record


def _check_model(session: Session, team_id: str, model: str) -> None:
    if model in get_settings().fine_tunable_models:
        return
    if model.startswith("ft:"):
        # Continuing training is allowed from the team's own fine-tuned models only.
        owned = session.exec(
            select(FineTuningJob.id).where(
                FineTuningJob.team_id == team_id, FineTuningJob.fine_tuned_model == model
            )
        ).first()
        if owned:
            return
    raise InvalidRequest(
        f"Model '{model}' is not available for fine-tuning. "
        f"Available: {', '.join(get_settings().fine_tunable_models)}.",
        param="model",
        code="model_not_available",
    )


def _refuse_blocked(record: File, param: str) -> None:
    if record.verdict == "block":
        errors = (record.report or {}).get("counts_by_severity", {}).get("error", 0)
        raise InvalidRequest(
            f"File {record.id} failed ftq's pre-flight checks with {errors} error(s); "
            f"see GET /v1/files/{record.id}/validation for each finding and its fix.",
            param=param,
            code="file_blocked",
        )


def create_job(
    session: Session, team_id: str, request: CreateJobInput, *, request_id: str | None = None
) -> FineTuningJob:
    """Record the job and schedule its submission; nothing reaches the provider here."""
    from service.providers.local import jobs as local_jobs

    limits.check_job_create(session, team_id)
    local = local_jobs.wants_local(session, team_id, request)
    if local:
        local_jobs.check_request(request)
    else:
        _check_model(session, team_id, request.model)
    training = _usable_file(session, team_id, request.training_file, "training_file")
    _refuse_blocked(training, "training_file")
    method_type = request.method.type if request.method else None
    check_fits(training.format, request.model, method_type, file_id=training.id, local=local)
    if request.validation_file:
        validation = _usable_file(session, team_id, request.validation_file, "validation_file")
        _refuse_blocked(validation, "validation_file")
        check_fits(
            validation.format,
            request.model,
            method_type,
            param="validation_file",
            file_id=validation.id,
            local=local,
        )
        if request.validation_file == training.id:
            raise InvalidRequest(
                "The same file cannot be both training_file and validation_file.",
                param="validation_file",
            )
    method = request.method.model_dump(exclude_none=True) if request.method else None
    hyper = (
        request.hyperparameters.model_dump(exclude_none=True) if request.hyperparameters else None
    )
    if method is None:
        method = {"type": "supervised", "supervised": {"hyperparameters": hyper or {}}}
    provider = local_jobs.LOCAL_PROVIDER if local else provider_for_team(session, team_id)
    job = FineTuningJob(
        id=ids.job_id(),
        team_id=team_id,
        model=request.model,
        training_file_id=training.id,
        validation_file_id=request.validation_file,
        status=JobStatus.validating_files,
        stage=JobStage.pending,
        method=method,
        hyperparameters=hyper,
        suffix=request.suffix,
        seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
        user_metadata=request.metadata,
        integrations=[i.model_dump(exclude_none=True) for i in request.integrations]
        if request.integrations
        else None,
        priority=request.priority,
        provider=provider.name,
        account=provider.account,
        request_id=request_id,
    )
    session.add(job)
    session.flush()
    estimate = (
        budgets.estimate_cost(training, job.model, requested_epochs(request))
        if job.provider != "local"
        else None
    )
    if estimate is not None:
        budgets.reserve(session, job, estimate)
    add_event(session, job, f"Created fine-tuning job: {job.id}")
    audit.record(session, None, "job.create", "fine_tuning_job", job.id, team_id=team_id)
    enqueue("jobs.submit", job.id)
    return job


def get_job(
    session: Session, team_id: str, job_id: str, *, for_update: bool = False
) -> FineTuningJob:
    query = select(FineTuningJob).where(
        FineTuningJob.id == job_id, FineTuningJob.team_id == team_id
    )
    if for_update:
        # Serialises with the submit task's compare-and-set updates on the same row.
        query = query.with_for_update()
    job = session.exec(query).first()
    if job is None:
        raise NotFound(
            f"No such fine-tuning job: {job_id}",
            param="fine_tuning_job_id",
            code="fine_tune_not_found",
        )
    return job


def list_jobs(
    session: Session,
    team_id: str,
    *,
    after: str | None = None,
    limit: int = 20,
    metadata: dict[str, str] | None = None,
) -> tuple[list[FineTuningJob], bool]:
    query = select(FineTuningJob).where(FineTuningJob.team_id == team_id)
    if after:
        anchor = get_job(session, team_id, after)
        query = query.where(
            sa.tuple_(FineTuningJob.created_at, FineTuningJob.id)
            < sa.tuple_(sa.literal(anchor.created_at), sa.literal(anchor.id))
        )
    ordered = query.order_by(FineTuningJob.created_at.desc(), FineTuningJob.id.desc())  # type: ignore[attr-defined]
    if not metadata:
        rows = list(session.exec(ordered.limit(limit + 1)))
        return rows[:limit], len(rows) > limit
    # JSON containment differs between Postgres and SQLite; filter in Python over a scan of
    # the team's jobs (bounded by the team's own job count).
    matched: list[FineTuningJob] = []
    for job in session.exec(ordered):
        meta = job.user_metadata or {}
        if all(meta.get(k) == v for k, v in metadata.items()):
            matched.append(job)
            if len(matched) > limit:
                break
    return matched[:limit], len(matched) > limit


def request_cancel(session: Session, team_id: str, job_id: str) -> FineTuningJob:
    """Cancel: local before submission, propagated upstream after; idempotent."""
    job = get_job(session, team_id, job_id, for_update=True)
    audit.record(session, None, "job.cancel", "fine_tuning_job", job.id, team_id=team_id)
    if job.status in TERMINAL_STATUSES:
        if job.status == JobStatus.cancelled:
            return job
        raise InvalidRequest(
            f"Job {job.id} has already {job.status}; it cannot be cancelled.",
            param="fine_tuning_job_id",
        )
    job.cancel_requested = True
    job.updated_at = utcnow()
    if job.provider == "local":
        from service.providers.local import jobs as local_jobs

        return local_jobs.cancel_requested(session, job)
    if (
        job.stage in (*SUBMISSION_STAGES, JobStage.waiting)
        and job.upstream_job_id is None
        and job.stage != JobStage.creating
    ):
        # Nothing exists upstream yet: cancel here. A submit task that wakes later sees it.
        set_status(session, job, JobStatus.cancelled)
        add_event(session, job, "Job cancelled before it reached the provider.")
        return job
    # An upstream job exists (or its create is in flight): the poller cancels it upstream.
    job.next_poll_at = utcnow()
    session.add(job)
    add_event(session, job, "Cancellation requested.")
    return job


def _upstream_control(
    session: Session, team_id: str, job_id: str, action: str, allowed: set[str]
) -> FineTuningJob:
    """Pause or resume: passed through to the provider, the result recorded at once."""
    from service.providers.base import ProviderError
    from service.providers.registry import provider_for_account

    job = get_job(session, team_id, job_id)
    if job.provider == "local":
        raise InvalidRequest(
            f"Job {job.id} trains on ftq's own workers, which cannot pause a run; cancel it "
            "instead (its checkpoints stay listed).",
            param="fine_tuning_job_id",
            code="invalid_job_state",
        )
    if job.status not in allowed or job.upstream_job_id is None:
        raise InvalidRequest(
            f"Job {job.id} is {job.status}; only {' or '.join(sorted(allowed))} jobs can be "
            f"{'paused' if action == 'pause' else 'resumed'}.",
            param="fine_tuning_job_id",
            code="invalid_job_state",
        )
    provider = provider_for_account(job.account, session=session)
    call = provider.pause_job if action == "pause" else provider.resume_job
    try:
        upstream = call(job.upstream_job_id)
    except ProviderError as error:
        from service.jobs.inference import api_error_from_provider

        raise api_error_from_provider(error) from error
    job = get_job(session, team_id, job_id, for_update=True)
    audit.record(session, None, f"job.{action}", "fine_tuning_job", job.id, team_id=team_id)
    job.upstream_status = upstream.status
    set_status(session, job, upstream.status)
    add_event(
        session, job, f"Job {'paused' if action == 'pause' else 'resumed'} at the team's request."
    )
    # Poll soon so events and timing catch up with the new state.
    job.poll_interval_seconds = None
    job.next_poll_at = utcnow()
    session.add(job)
    return job


def pause_job(session: Session, team_id: str, job_id: str) -> FineTuningJob:
    return _upstream_control(session, team_id, job_id, "pause", {"running", "queued"})


def resume_job(session: Session, team_id: str, job_id: str) -> FineTuningJob:
    return _upstream_control(session, team_id, job_id, "resume", {"paused"})


def list_events(
    session: Session, team_id: str, job_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[JobEvent], bool]:
    job = get_job(session, team_id, job_id)
    query = select(JobEvent).where(JobEvent.job_id == job.id)
    if after:
        anchor = session.exec(
            select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.id == after)
        ).first()
        if anchor is None:
            raise NotFound(f"No such event: {after}", param="after")
        query = query.where(
            sa.tuple_(JobEvent.created_at, JobEvent.pk)
            < sa.tuple_(sa.literal(anchor.created_at), sa.literal(anchor.pk))
        )
    # Newest first by the time each event happened (upstream events arrive after ftq's own
    # have been written), insertion order breaking ties: stable for `after` paging.
    ordered = query.order_by(JobEvent.created_at.desc(), JobEvent.pk.desc())  # type: ignore[attr-defined,union-attr]
    rows = list(session.exec(ordered.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_checkpoints(
    session: Session, team_id: str, job_id: str, *, after: str | None = None, limit: int = 10
) -> tuple[list[JobCheckpoint], bool]:
    job = get_job(session, team_id, job_id)
    query = select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)
    if after:
        anchor = session.exec(
            select(JobCheckpoint).where(JobCheckpoint.job_id == job.id, JobCheckpoint.id == after)
        ).first()
        if anchor is None:
            raise NotFound(f"No such checkpoint: {after}", param="after")
        query = query.where(JobCheckpoint.step_number < anchor.step_number)
    rows = list(
        session.exec(query.order_by(JobCheckpoint.step_number.desc()).limit(limit + 1))  # type: ignore[attr-defined]
    )
    return rows[:limit], len(rows) > limit


def find_model_owner(session: Session, team_id: str, model: str) -> FineTuningJob | None:
    """The team's job that produced ``model`` (a fine-tuned model or one of its checkpoints)."""
    job = session.exec(
        select(FineTuningJob).where(
            FineTuningJob.team_id == team_id, FineTuningJob.fine_tuned_model == model
        )
    ).first()
    if job:
        return job
    checkpoint = session.exec(
        select(JobCheckpoint)
        .join(FineTuningJob, JobCheckpoint.job_id == FineTuningJob.id)  # type: ignore[arg-type]
        .where(FineTuningJob.team_id == team_id, JobCheckpoint.fine_tuned_model_checkpoint == model)
    ).first()
    return session.get(FineTuningJob, checkpoint.job_id) if checkpoint else None
