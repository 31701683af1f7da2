"""Fine-tuning jobs as a team sees them: create, read, list, cancel, events, checkpoints."""

from __future__ import annotations

import secrets

import structlog
from sqlmodel import Session, col, select

from service import ids
from service.db import utcnow
from service.dispatch import enqueue
from service.errors import Conflict, InvalidRequest, NotFound
from service.files.compat import check_fits
from service.files.models import File
from service.files.service import FINE_TUNE
from service.jobs import budgets, quota
from service.jobs.models import (
    TERMINAL_STATUSES,
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
    JobStage,
    JobStatus,
)
from service.jobs.runners import choose, runner_for
from service.jobs.schemas import CreateJobInput
from service.jobs.transitions import add_event
from service.pagination import after_condition, keyset_page, ordered
from service.tenants import audit

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
    quota.check_job_create(session, team_id)
    from service.registry.retrain import resolve as resolve_retrain

    request, parent_job_id = resolve_retrain(session, team_id, request)
    runner = choose(session, team_id, request)
    provider = runner.check_request(session, team_id, request)
    local = provider.name == "local"
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
        resources=request.resources,
        provider=provider.name,
        account=provider.account,
        request_id=request_id,
        parent_job_id=parent_job_id,
    )
    from service.evals.gate import check_config

    job.evaluation_config = check_config(session, team_id, request.evaluation)
    session.add(job)
    session.flush()
    estimate = runner.estimate_cost(training, job)
    if estimate is not None:
        budgets.reserve(session, job, estimate)
    add_event(session, job, f"Accepted by ftq as {job.id}; the provider's job is created next.")
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
    scope = [col(FineTuningJob.team_id) == team_id]
    order = (col(FineTuningJob.created_at), col(FineTuningJob.id))
    if not metadata:
        return keyset_page(
            session,
            select(FineTuningJob).where(*scope),
            after=after,
            limit=limit,
            id_column=col(FineTuningJob.id),
            order=order,
            scope=scope,
        )
    query = select(FineTuningJob).where(*scope)
    if after:
        query = query.where(
            after_condition(
                session, after=after, id_column=col(FineTuningJob.id), order=order, scope=scope
            )
        )
    # JSON containment differs between Postgres and SQLite; filter in Python over a scan of
    # the team's jobs (bounded by the team's own job count).
    matched: list[FineTuningJob] = []
    for job in session.exec(ordered(query, order)):
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
            code="invalid_job_state",
        )
    if job.cancel_requested:
        return job  # asked already; the runner is on it
    job.cancel_requested = True
    job.updated_at = utcnow()
    return runner_for(job.provider).cancel(session, job)


def _control(session: Session, team_id: str, job_id: str, action: str) -> FineTuningJob:
    """Pause or resume, through the job's runner (passed through to the provider)."""
    job = get_job(session, team_id, job_id)
    job = runner_for(job.provider).control(session, job, action)
    audit.record(session, None, f"job.{action}", "fine_tuning_job", job.id, team_id=team_id)
    return job


def pause_job(session: Session, team_id: str, job_id: str) -> FineTuningJob:
    return _control(session, team_id, job_id, "pause")


def resume_job(session: Session, team_id: str, job_id: str) -> FineTuningJob:
    return _control(session, team_id, job_id, "resume")


def list_events(
    session: Session, team_id: str, job_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[JobEvent], bool]:
    job = get_job(session, team_id, job_id)
    scope = [col(JobEvent.job_id) == job.id]
    # Newest first by the time each event happened (upstream events arrive after ftq's own
    # have been written), insertion order breaking ties: stable for `after` paging.
    return keyset_page(
        session,
        select(JobEvent).where(*scope),
        after=after,
        limit=limit,
        id_column=col(JobEvent.id),
        order=(col(JobEvent.created_at), col(JobEvent.pk)),
        scope=scope,
    )


def list_checkpoints(
    session: Session, team_id: str, job_id: str, *, after: str | None = None, limit: int = 10
) -> tuple[list[JobCheckpoint], bool]:
    job = get_job(session, team_id, job_id)
    scope = [col(JobCheckpoint.job_id) == job.id]
    return keyset_page(
        session,
        select(JobCheckpoint).where(*scope),
        after=after,
        limit=limit,
        id_column=col(JobCheckpoint.id),
        order=(col(JobCheckpoint.step_number), col(JobCheckpoint.pk)),
        scope=scope,
    )


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


def refuse_delete_in_use(session: Session, team_id: str, file_id: str) -> None:
    """A file an unfinished job still reads (to upload, train or evaluate) cannot be deleted:
    409 naming the job, instead of a job stuck holding a slot until its lease gives up."""
    from sqlalchemy import or_

    user = session.exec(
        select(FineTuningJob.id).where(
            FineTuningJob.team_id == team_id,
            FineTuningJob.stage != JobStage.done,
            or_(
                col(FineTuningJob.training_file_id) == file_id,
                col(FineTuningJob.validation_file_id) == file_id,
                col(FineTuningJob.converted_training_file_id) == file_id,
            ),
        )
    ).first()
    if user is not None:
        raise Conflict(
            f"File {file_id} is used by fine-tuning job {user}, which has not finished; "
            "cancel the job or wait for it to end before deleting the file.",
            param="file_id",
            code="file_in_use",
        )
