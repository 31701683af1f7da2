"""Fine-tuning jobs, their events and checkpoints.

``status`` is OpenAI's enum (plus ``paused``); ``stage`` is ftq's finer position in its own
pipeline, which SDK clients see as an added field.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import utcnow
from service.dbtypes import json_column


class JobStatus(enum.StrEnum):
    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class JobStage(enum.StrEnum):
    pending = "pending"  # accepted, waiting for the submit task
    validating = "validating"  # waiting for its files' pre-flight reports
    waiting = "waiting"  # in ftq's queue for a team or provider-account slot
    uploading = "uploading"  # sending the dataset to the provider
    creating = "creating"  # creating the upstream job (exactly once)
    tracking = "tracking"  # upstream job exists; the sweeper follows it
    training = "training"  # a local job: queued for or running on a training worker
    evaluating = "evaluating"  # succeeded; its evaluation gate runs before the verdict
    done = "done"  # terminal


SUBMISSION_STAGES = frozenset(
    {JobStage.pending, JobStage.validating, JobStage.uploading, JobStage.creating}
)


class FineTuningJob(SQLModel, table=True):
    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        sa.Index("ix_jobs_due", "stage", "next_poll_at"),
        sa.Index("ix_jobs_team_created", "team_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", max_length=32)
    model: str = Field(max_length=256)
    training_file_id: str = Field(foreign_key="files.id", max_length=40)
    validation_file_id: str | None = Field(default=None, foreign_key="files.id", max_length=40)
    status: str = Field(default=JobStatus.validating_files, max_length=32)
    stage: str = Field(default=JobStage.pending, max_length=32)
    method: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    hyperparameters: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    suffix: str | None = Field(default=None, max_length=64)
    seed: int
    user_metadata: dict[str, str] | None = Field(default=None, sa_column=json_column())
    integrations: list[dict[str, Any]] | None = Field(default=None, sa_column=json_column())

    # ftq's own copy of a prompt/completion file converted for a chat model.
    converted_training_file_id: str | None = Field(default=None, max_length=40)
    priority: int = 0  # within a team's queue; teams themselves take turns
    estimated_cost_usd: float | None = None  # the budget hold while the job is active
    admitted_at: dt.datetime | None = None  # when it last got a concurrency slot

    provider: str = Field(default="openai", max_length=32)
    account: str = Field(max_length=64)  # fingerprint of the provider credentials used
    upstream_job_id: str | None = Field(default=None, unique=True, max_length=128)
    upstream_training_file_id: str | None = Field(default=None, max_length=128)
    upstream_validation_file_id: str | None = Field(default=None, max_length=128)
    upstream_status: str | None = Field(default=None, max_length=32)
    upstream_events_cursor: str | None = Field(default=None, max_length=128)

    fine_tuned_model: str | None = Field(default=None, max_length=512)
    trained_tokens: int | None = None
    result_files: list[str] | None = Field(default=None, sa_column=json_column())
    results_pending: bool = False  # upstream result files not yet copied into ftq
    error: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    estimated_finish: int | None = None
    cancel_requested: bool = False
    # The evaluation gate asked for at create (eval id, criterion, min_delta) and its result.
    # A local job's requested resources ({"processes": N}); see migration 0010.
    resources: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    evaluation_config: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    evaluation: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    # The job this one re-trained elsewhere (retrain_of at create; see service.registry).
    parent_job_id: str | None = Field(default=None, max_length=40, index=False)

    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    finished_at: dt.datetime | None = None

    # Work bookkeeping: leases make every task and sweep safe to run twice.
    next_poll_at: dt.datetime | None = None
    poll_interval_seconds: float | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: dt.datetime | None = None
    attempts: int = 0
    sequence: int = 0  # bumped on every visible change; carried in webhook payloads
    request_id: str | None = Field(default=None, max_length=64)


class JobEvent(SQLModel, table=True):
    __tablename__ = "fine_tuning_job_events"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "upstream_event_id", name="uq_job_events_upstream"),
        sa.Index("ix_job_events_job_pk", "job_id", "pk"),
    )

    pk: int | None = Field(default=None, primary_key=True)  # insertion order = event order
    id: str = Field(unique=True, max_length=40)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", max_length=40)
    created_at: int  # unix seconds, as OpenAI
    level: str = Field(default="info", max_length=8)
    message: str
    type: str = Field(default="message", max_length=16)
    data: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    upstream_event_id: str | None = Field(default=None, max_length=128)


class JobCheckpoint(SQLModel, table=True):
    __tablename__ = "fine_tuning_job_checkpoints"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "upstream_checkpoint_id", name="uq_job_ckpt_upstream"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", index=True, max_length=40)
    created_at: int
    step_number: int
    fine_tuned_model_checkpoint: str = Field(max_length=512)
    metrics: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    upstream_checkpoint_id: str | None = Field(default=None, max_length=128)
