"""Evals, their runs and each run's output items, in OpenAI's Evals shapes.

A run is durable work: its row carries a lease (``lease_owner``/``lease_expires_at``) and
its items are committed one by one as ``EvalOutputItem`` rows keyed by (run, item index),
so a worker that dies mid-run is replaced by one that skips every finished item. A gate
row ties a fine-tuning job to the runs that compare its models.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import utcnow
from service.dbtypes import json_column


class RunStatus(enum.StrEnum):
    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.completed, RunStatus.failed, RunStatus.canceled})


class Eval(SQLModel, table=True):
    __tablename__ = "evals"
    __table_args__ = (sa.Index("ix_evals_team_created", "team_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", max_length=32)
    name: str = Field(default="", max_length=256)
    data_source_config: dict[str, Any] = Field(sa_column=json_column(nullable=False))
    testing_criteria: list[dict[str, Any]] = Field(sa_column=json_column(nullable=False))
    user_metadata: dict[str, str] | None = Field(default=None, sa_column=json_column())
    # ftq extension: the template that filled this eval in, with its settings (labels...).
    template: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    created_at: dt.datetime = Field(default_factory=utcnow)
    deleted_at: dt.datetime | None = None


class EvalRun(SQLModel, table=True):
    __tablename__ = "eval_runs"
    __table_args__ = (
        sa.Index("ix_eval_runs_eval_created", "eval_id", "created_at"),
        sa.Index("ix_eval_runs_status", "status", "lease_expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", max_length=32)
    eval_id: str = Field(foreign_key="evals.id", max_length=40)
    name: str = Field(default="", max_length=256)
    model: str | None = Field(default=None, max_length=512)
    data_source: dict[str, Any] = Field(sa_column=json_column(nullable=False))
    # The items to evaluate, read once at create (inline content or the file's lines).
    items: list[dict[str, Any]] = Field(default_factory=list, sa_column=json_column(nullable=False))
    user_metadata: dict[str, str] | None = Field(default=None, sa_column=json_column())
    status: str = Field(default=RunStatus.queued, max_length=16)
    error: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    total_items: int = 0
    # Provider account that samples this run: concurrency is limited per account.
    account: str | None = Field(default=None, max_length=64)
    cancel_requested: bool = False
    usage: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    cost_usd: float = 0.0
    metrics: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    # A gate's run: the job it evaluates and which model of it ("base", "fine_tuned", ckpt).
    gate_job_id: str | None = Field(default=None, max_length=40, index=True)
    gate_role: str | None = Field(default=None, max_length=512)
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    finished_at: dt.datetime | None = None
    deleted_at: dt.datetime | None = None

    not_before: dt.datetime | None = None  # after a 429: wait for the provider's Retry-After
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: dt.datetime | None = None
    attempts: int = 0


class EvalOutputItem(SQLModel, table=True):
    __tablename__ = "eval_output_items"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "datasource_item_id", name="uq_eval_items_run_index"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    run_id: str = Field(foreign_key="eval_runs.id", max_length=40)
    eval_id: str = Field(max_length=40)
    team_id: str = Field(max_length=32, index=True)
    datasource_item_id: int
    datasource_item: dict[str, Any] = Field(sa_column=json_column(nullable=False))
    status: str = Field(max_length=16)  # pass, fail, error
    results: list[dict[str, Any]] = Field(sa_column=json_column(nullable=False))
    sample: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    created_at: dt.datetime = Field(default_factory=utcnow)


class EvalGate(SQLModel, table=True):
    """A fine-tuning job's evaluation gate in progress (one per job)."""

    __tablename__ = "eval_gates"

    id: str = Field(primary_key=True, max_length=40)  # the job id
    team_id: str = Field(max_length=32)
    eval_id: str = Field(max_length=40)
    status: str = Field(default="running", max_length=16)  # running, recorded, failed
    runs: dict[str, str] = Field(default_factory=dict, sa_column=json_column(nullable=False))
    holdout: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: dt.datetime | None = None
