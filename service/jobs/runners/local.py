"""The local runner: ftq trains open-weight models itself, on its ``training`` queue.

Admission is the same as for every job (reports, conversion, fair queue); once admitted, the
job moves to stage ``training`` and ``training.run`` is enqueued instead of an upload and an
upstream create. A training worker claims the job with a
lease (compare-and-set), renews it from a heartbeat thread while it trains, and writes
events, checkpoints and the result straight into the database. A worker that dies leaves a
lease that lapses; ``reconcile`` then hands the job to another worker, whose trainer resumes
from the newest complete checkpoint in the job's output directory.

Nothing here imports torch: the API imports this module to select and validate local jobs.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlmodel import Session, col, select

from service import ids, leases
from service.config import Settings, get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.errors import InvalidRequest
from service.files.models import File
from service.files.service import file_path
from service.jobs import failures, lifecycle
from service.jobs.lifecycle import Outcome
from service.jobs.models import (
    TERMINAL_STATUSES,
    FineTuningJob,
    JobCheckpoint,
    JobStage,
    JobStatus,
)
from service.jobs.runners.base import ProviderRef
from service.jobs.schemas import CreateJobInput
from service.jobs.transitions import add_checkpoint, add_event
from service.providers.local.contract import TrainingProcessFailed
from service.providers.local.naming import fine_tuned_model_name
from service.providers.local.requests import LOCAL_METHOD_TYPES, training_method
from service.providers.local.spec import (
    ResourcesError,
    StrategyRequest,
    check_resources,
    resources_from_job,
)
from service.providers.local.trainer import TrainingCallbacks
from service.tenants.models import Team

log = structlog.get_logger(__name__)

LOCAL = "local"
RUN_TASK = "training.run"
# Copies of each checkpoint's trained weights, kept for the job's lifetime (the trainer keeps
# only the newest few as resume points).
SAVED_CHECKPOINTS_DIR = "saved-checkpoints"
_CHECKPOINT_FILES = ("trainable.safetensors", "trainer_state.json")
RECONCILE_BATCH = 200

INVALID_METHOD = failures.FailureCode(
    "invalid_method", "Change the method (layer count, module names) and create a new job."
)
TRAINING_ERROR = failures.FailureCode(
    "training_error",
    "Training failed on the worker; a lower learning_rate_multiplier may help, and operators "
    "have the logs.",
)


LOCAL_PROVIDER = ProviderRef(LOCAL, LOCAL)


# Selection and validation (API side) --------------------------------------------------------
def wants_local(session: Session, team_id: str, request: CreateJobInput) -> bool:
    """Whether the job trains locally: the request's ``provider``, else a local ``method``,
    else the team's default."""
    method_type = request.method.type if request.method else None
    if request.provider is not None:
        local = request.provider == LOCAL
    elif method_type in LOCAL_METHOD_TYPES:
        local = True
    else:
        local = team_default_is_local(session, team_id)
    if not local and method_type in LOCAL_METHOD_TYPES:
        raise InvalidRequest(
            f"Method '{method_type}' trains on ftq's own workers; it needs provider 'local'.",
            param="method.type",
            code="invalid_method",
        )
    return local


def team_default_is_local(session: Session, team_id: str, settings: Settings | None = None) -> bool:
    defaults = set((settings or get_settings()).local.default_for_teams)
    if not defaults:
        return False
    if team_id in defaults:
        return True
    team = session.get(Team, team_id)
    return team is not None and team.name in defaults


def check_request(request: CreateJobInput, settings: Settings | None = None) -> None:
    """Refuse, before anything is queued, what a training worker would refuse later."""
    local = (settings or get_settings()).local
    if request.model not in local.allowed_base_models:
        allowed = ", ".join(sorted(local.allowed_base_models)) or "none configured"
        raise InvalidRequest(
            f"Model '{request.model}' is not available for local fine-tuning. "
            f"Available: {allowed}.",
            param="model",
            code="model_not_available",
        )
    method = request.method.model_dump(exclude_none=True) if request.method else None
    hyper = (
        request.hyperparameters.model_dump(exclude_none=True) if request.hyperparameters else None
    )
    try:
        training_method(method, hyper)
    except ValueError as exc:
        raise InvalidRequest(
            f"Invalid method for local fine-tuning: {exc}", param="method", code="invalid_method"
        ) from exc
    try:
        check_resources(request.resources, local)
    except ResourcesError as exc:
        raise InvalidRequest(str(exc), param=exc.param, code="invalid_resources") from exc


# Submission and cancel ----------------------------------------------------------------------
def admit(session: Session, job: FineTuningJob) -> None:
    """The job holds a capacity slot: queue it for a training worker."""
    job.next_poll_at = utcnow() + dt.timedelta(seconds=get_settings().local.requeue_seconds)
    lifecycle.move(session, job, "admit_local", message="Queued for a local training worker.")
    enqueue(RUN_TASK, job.id)


def cancel_requested(session: Session, job: FineTuningJob) -> FineTuningJob:
    """``request_cancel`` for a local job (row locked, ``cancel_requested`` already set).

    A job no worker is training is cancelled at once; a running one is stopped by its worker
    before the next step.
    """
    running = job.stage == JobStage.training and leases.is_held(job.lease_expires_at)
    if running:
        session.add(job)
        add_event(session, job, "Cancellation requested; training stops before the next step.")
        _flag_multi_process_cancel(job.id)
        return job
    lifecycle.cancel(session, job, "Job cancelled before a training worker ran it.")
    return job


def _flag_multi_process_cancel(job_id: str) -> None:
    """Also raise the cancel flag the ranks of a multi-process run read before every step,
    when this process shares the data folder: they stop without waiting for their parent's
    next poll of ``cancel_requested``, which trails behind its event writes. Best effort; the
    parent's poll of the database (the truth) raises it anyway."""
    from service.providers.local.distributed import RUN_DIR, RunFiles

    files = RunFiles(output_dir(job_id) / RUN_DIR)
    try:
        if files.launch.is_file():
            files.cancel.touch()
    except OSError:
        log.warning("local_cancel_flag_not_written", job_id=job_id)


# Claim and reconcile ------------------------------------------------------------------------
def _runnable(job_id: str | None = None) -> list[sa.ColumnElement[bool]]:
    clauses = [
        col(FineTuningJob.provider) == LOCAL,
        col(FineTuningJob.stage) == JobStage.training,
        col(FineTuningJob.status).not_in([s.value for s in TERMINAL_STATUSES]),
    ]
    if job_id is not None:
        clauses.append(col(FineTuningJob.id) == job_id)
    return clauses


def reconcile() -> list[str]:
    """Re-enqueue local jobs nobody trains: a dead worker's (lease lapsed) at once, a queued
    one whose message may be lost after ``requeue_seconds``."""
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        job_ids = list(
            session.exec(
                select(FineTuningJob.id)
                .where(
                    *_runnable(),
                    leases.not_leased(FineTuningJob, now),
                    sa.or_(
                        col(FineTuningJob.next_poll_at).is_(None),
                        col(FineTuningJob.next_poll_at) <= now,
                    ),
                )
                .limit(RECONCILE_BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        if job_ids:
            session.execute(
                sa.update(FineTuningJob)
                .where(col(FineTuningJob.id).in_(job_ids))
                .values(next_poll_at=now + dt.timedelta(seconds=settings.local.requeue_seconds))
            )
        for job_id in job_ids:
            enqueue(RUN_TASK, job_id)
    if job_ids:
        log.info("local_training_requeued", count=len(job_ids))
    return job_ids


@dataclass(frozen=True)
class Claim:
    job_id: str
    model: str
    model_name: str
    training_file: Path
    validation_file: Path | None
    method: dict[str, Any] | None
    hyperparameters: dict[str, Any] | None
    seed: int
    attempts: int
    processes: int = 1
    strategy: StrategyRequest = "auto"


def output_dir(job_id: str, settings: Settings | None = None) -> Path:
    return (settings or get_settings()).data_dir.resolve() / "local-models" / job_id


def final_dir(job_id: str, settings: Settings | None = None) -> Path:
    return output_dir(job_id, settings) / "final"


def saved_checkpoint_dir(job_id: str, step: int, settings: Settings | None = None) -> Path:
    return output_dir(job_id, settings) / SAVED_CHECKPOINTS_DIR / f"step-{step:08d}"


def claim(job_id: str, owner: str) -> Claim | None:
    """Take the job for training (lease, compare-and-set); None if it is not ours to run."""
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        taken = leases.claim(
            session,
            FineTuningJob,
            job_id,
            owner,
            settings.local.lease_seconds,
            where=tuple(_runnable(job_id)),
            values={
                "attempts": FineTuningJob.attempts + 1,
                "next_poll_at": None,
                "updated_at": now,
            },
        )
        if not taken:
            return None
        job = session.get(FineTuningJob, job_id, populate_existing=True)
        assert job is not None
        if job.cancel_requested:
            lifecycle.cancel(session, job, "Job cancelled before a training worker ran it.")
            return None
        if job.attempts > settings.max_submit_attempts:
            job.error = failures.job_error(
                failures.WORKER_LOST,
                f"Training was started {job.attempts - 1} times and never finished.",
            )
            lifecycle.fail(session, job, job.error)
            return None
        team = session.get(Team, job.team_id)
        training = session.get(File, job.converted_training_file_id or job.training_file_id)
        validation = session.get(File, job.validation_file_id) if job.validation_file_id else None
        assert training is not None
        model_name = fine_tuned_model_name(
            job.model, team.name if team else job.team_id, job.suffix, job.id
        )
        lifecycle.move(session, job, "start_training")
        resources = resources_from_job(job.resources)
        return Claim(
            job_id=job.id,
            model=job.model,
            model_name=model_name,
            training_file=file_path(training),
            validation_file=file_path(validation) if validation else None,
            method=job.method,
            hyperparameters=job.hyperparameters,
            seed=job.seed,
            attempts=job.attempts,
            processes=resources.processes,
            strategy=resources.strategy,
        )


class LeaseLost(Exception):
    """Another worker holds the job now (ours lapsed): stop without touching it."""


# Running ------------------------------------------------------------------------------------
class JobCallbacks(TrainingCallbacks):
    """The trainer's callbacks for one job: events, checkpoints, cancel and lease checks."""

    def __init__(self, claim: Claim, owner: str, heartbeat: leases.Heartbeat) -> None:
        self.claim = claim
        self.owner = owner
        self.heartbeat = heartbeat

    def _write(self, fn: Any) -> None:
        with session_scope() as session:
            job = session.get(FineTuningJob, self.claim.job_id)
            if job is None or job.lease_owner != self.owner:
                raise LeaseLost(self.claim.job_id)
            fn(session, job)

    def on_step(
        self, step: int, total_steps: int, train_loss: float, learning_rate: float, tokens: int
    ) -> None:
        data = {
            "step": step,
            "train_loss": train_loss,
            "learning_rate": learning_rate,
            "total_steps": total_steps,
            "tokens": tokens,
        }
        self._write(
            lambda session, job: add_event(
                session,
                job,
                f"Step {step}/{total_steps}: training loss={train_loss:.4f}",
                type="metrics",
                data=data,
            )
        )

    def on_eval(self, step: int, valid_loss: float) -> None:
        data = {"step": step, "valid_loss": valid_loss}
        self._write(
            lambda session, job: add_event(
                session,
                job,
                f"Step {step}: validation loss={valid_loss:.4f}",
                type="metrics",
                data=data,
            )
        )

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        # The trainer prunes its own copies; keep the weights for the job's lifetime.
        target = saved_checkpoint_dir(self.claim.job_id, step)
        tmp = target.with_name(f".tmp-{target.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in _CHECKPOINT_FILES:
            if (path / name).is_file():
                shutil.copy2(path / name, tmp / name)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        name = checkpoint_model_name(self.claim.model_name, step)
        shown = {k: v for k, v in metrics.items() if k in ("train_loss", "valid_loss")}
        shown["step"] = step

        def record(session: Session, job: FineTuningJob) -> None:
            marker = f"local:{step}"
            exists = session.exec(
                select(JobCheckpoint.id).where(
                    JobCheckpoint.job_id == job.id, JobCheckpoint.upstream_checkpoint_id == marker
                )
            ).first()
            if exists:
                return
            add_checkpoint(
                session,
                job,
                JobCheckpoint(
                    id=ids.checkpoint_id(),
                    job_id=job.id,
                    created_at=int(time.time()),
                    step_number=step,
                    fine_tuned_model_checkpoint=name,
                    metrics=shown,
                    upstream_checkpoint_id=marker,
                ),
            )
            add_event(session, job, f"Checkpoint saved at step {step}: {name}")

        self._write(record)

    def should_cancel(self) -> bool:
        """Read before every step (one indexed row read), so a cancel stops within a step."""
        if self.heartbeat.lost.is_set():
            raise LeaseLost(self.claim.job_id)
        with session_scope() as session:
            row = session.execute(
                sa.select(
                    col(FineTuningJob.cancel_requested), col(FineTuningJob.lease_owner)
                ).where(col(FineTuningJob.id) == self.claim.job_id)
            ).first()
        if row is None or row.lease_owner != self.owner:
            raise LeaseLost(self.claim.job_id)
        return bool(row.cancel_requested)


def checkpoint_model_name(model_name: str, step: int) -> str:
    return f"{model_name}:ckpt-step-{step}"


def _finish(job_id: str, owner: str, apply: Any) -> bool:
    """Apply a final change if we still hold the lease; always under the row lock."""
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner or job.status in TERMINAL_STATUSES:
            return False
        leases.clear(job)
        apply(session, job)
        session.add(job)
        return True


def _fail(
    job_id: str, owner: str, code: failures.FailureCode, message: str, param: str | None = None
) -> None:
    def apply(session: Session, job: FineTuningJob) -> None:
        lifecycle.fail(
            session, job, failures.job_error(code, message, param=param), message=message
        )

    _finish(job_id, owner, apply)


def _requeue(job_id: str, owner: str, message: str) -> None:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner or job.status in TERMINAL_STATUSES:
            return
        leases.clear(job)
        job.next_poll_at = utcnow()
        session.add(job)
        add_event(session, job, message, level="warn")


def _latest_checkpoint_step(job_id: str) -> int | None:
    from service.providers.local import checkpoints

    found = checkpoints.list_checkpoints(output_dir(job_id) / "checkpoints")
    return found[-1][0] if found else None


def run(job_id: str, owner: str) -> None:
    """Train one job under a lease; safe to call any number of times."""
    claimed = claim(job_id, owner)
    if claimed is None:
        return
    structlog.contextvars.bind_contextvars(job_id=job_id)
    settings = get_settings()
    with leases.Heartbeat(
        FineTuningJob,
        job_id,
        owner,
        seconds=settings.local.lease_seconds,
        every=settings.local.heartbeat_seconds,
    ) as heartbeat:
        try:
            _train(claimed, owner, settings, heartbeat)
        except LeaseLost:
            log.warning("local_training_lease_lost", job_id=job_id)


def _train(claimed: Claim, owner: str, settings: Settings, heartbeat: leases.Heartbeat) -> None:
    # Torch, transformers and peft load here only: the API never imports them.
    from service.providers.local.checkpoints import CheckpointMismatch
    from service.providers.local.data import DatasetError
    from service.providers.local.methods import MethodError
    from service.providers.local.models import UnknownBaseModel, resolve_base_model
    from service.providers.local.spec import TrainingSpec
    from service.providers.local.trainer import TrainingCancelled, train

    job_id = claimed.job_id
    try:
        base = resolve_base_model(claimed.model, settings.local)
        method, hyperparameters = training_method(claimed.method, claimed.hyperparameters)
        spec = TrainingSpec.from_settings(
            settings.local,
            base_model_path=base,
            method=method,
            hyperparameters=hyperparameters,
            seed=claimed.seed,
            output_dir=output_dir(job_id, settings),
            processes=claimed.processes,
            strategy=claimed.strategy,
        ).model_copy(update={"checkpoint_each_epoch": settings.local.checkpoint_each_epoch})
    except UnknownBaseModel as exc:
        _fail(job_id, owner, failures.MODEL_UNAVAILABLE, f"Base model unavailable: {exc}.", "model")
        return
    except ValueError as exc:  # pydantic's ValidationError included
        _fail(job_id, owner, INVALID_METHOD, f"Invalid method: {exc}.", "method")
        return
    resume_step = _latest_checkpoint_step(job_id)
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        if resume_step is not None:
            add_event(
                session,
                job,
                f"Resuming training from the checkpoint at step {resume_step}.",
                data={"resumed_from_step": resume_step},
            )
        else:
            where = "a local worker"
            if spec.processes > 1:
                where += f" ({spec.processes} processes, strategy {spec.strategy})"
            add_event(session, job, f"Training started ({method.type}) on {where}.")
    callbacks = JobCallbacks(claimed, owner, heartbeat)
    try:
        result = train(spec, claimed.training_file, claimed.validation_file, callbacks)
    except TrainingCancelled as cancelled:
        steps = cancelled.completed_steps

        def mark_cancelled(session: Session, job: FineTuningJob) -> None:
            lifecycle.cancel(session, job, f"Training cancelled after {steps} steps.")

        _finish(job_id, owner, mark_cancelled)
        return
    except LeaseLost:
        raise
    except TrainingProcessFailed as exc:
        # A rank died (killed, out of memory): not the job's fault. Give the job back so the
        # reconciler starts it again at once; the next attempt resumes from the newest
        # checkpoint, and repeated deaths end as worker_lost.
        _requeue(
            job_id, owner, f"A training process died ({exc}); resuming from the last checkpoint."
        )
        return
    except DatasetError as exc:
        _fail(
            job_id, owner, failures.DATA_FORMAT, f"Training data unusable: {exc}.", "training_file"
        )
        return
    except (MethodError, CheckpointMismatch) as exc:
        _fail(job_id, owner, INVALID_METHOD, f"Training could not start: {exc}.", "method")
        return
    except Exception as exc:  # diverged loss, out of memory, a bug: the job says so
        log.exception("local_training_failed", job_id=job_id)
        _fail(job_id, owner, TRAINING_ERROR, f"Training failed: {type(exc).__name__}: {exc}.")
        return

    # The weights as a downloadable result file, packed before the row lock is taken.
    from service.registry import export

    weights = export.stage(job_id, result.final_dir)

    def succeed(session: Session, job: FineTuningJob) -> None:
        job.hyperparameters = _resolved_hyperparameters(result.final_dir) or job.hyperparameters
        job.result_files = [
            *(job.result_files or []),
            export.step_metrics_csv(session, job).id,
            export.record(session, job, weights).id,
        ]
        add_event(
            session,
            job,
            f"Training finished: {result.steps} steps, {result.trained_tokens} tokens, "
            f"loss {result.first_train_loss:.4f} -> {result.final_train_loss:.4f}.",
            data={
                "steps": result.steps,
                "first_train_loss": result.first_train_loss,
                "final_train_loss": result.final_train_loss,
                "final_valid_loss": result.final_valid_loss,
                "resumed_from_step": result.resumed_from_step,
            },
        )
        add_event(session, job, f"New fine-tuned model created: {claimed.model_name}")
        lifecycle.finish(
            session,
            job,
            Outcome(
                JobStatus.succeeded,
                fine_tuned_model=claimed.model_name,
                trained_tokens=result.trained_tokens,
                message="The job has successfully completed.",
            ),
        )

    if not _finish(job_id, owner, succeed):
        weights.staged.discard()


def _resolved_hyperparameters(final: Path) -> dict[str, Any]:
    """The hyperparameters the trainer actually used ("auto" resolved), from ftq_model.json."""
    import json

    from service.providers.local.models import MODEL_INFO_FILE

    try:
        info = json.loads((final / MODEL_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(info.get("hyperparameters") or {})


# Inference lookups --------------------------------------------------------------------------
def model_dir_for(session: Session, model: str, settings: Settings | None = None) -> Path | None:
    """The directory serving ``model`` (a local job's fine-tuned model), or None."""
    job = session.exec(
        select(FineTuningJob).where(
            FineTuningJob.fine_tuned_model == model,
            FineTuningJob.provider == LOCAL,
            FineTuningJob.status == JobStatus.succeeded,
        )
    ).first()
    if job is None:
        return None
    path = final_dir(job.id, settings)
    return path if path.is_dir() else None


class LocalRunner:
    """ftq's own trainer: admission queues a training run; the worker reports back."""

    name = LOCAL

    def check_request(self, session: Session, team_id: str, request: CreateJobInput) -> ProviderRef:
        check_request(request)
        return LOCAL_PROVIDER

    def admit(self, session: Session, job: FineTuningJob, *, inline: bool = False) -> None:
        admit(session, job)

    def start(self, job_id: str, owner: str) -> None:
        """Nothing to upload or create: ``admit`` already queued the training run."""

    def cancel(self, session: Session, job: FineTuningJob) -> FineTuningJob:
        return cancel_requested(session, job)

    def control(self, session: Session, job: FineTuningJob, action: str) -> FineTuningJob:
        raise InvalidRequest(
            f"Job {job.id} trains on ftq's own workers, which cannot pause a run; cancel it "
            "instead (its checkpoints stay listed).",
            param="fine_tuning_job_id",
            code="invalid_job_state",
        )

    def reconcile(self) -> list[str]:
        return reconcile()

    def estimate_cost(self, training: File, job: FineTuningJob) -> float | None:
        return None  # ftq's own workers: no per-token bill

    def actual_cost(self, job: FineTuningJob) -> float | None:
        return 0.0 if job.trained_tokens else None
