"""The registry's wire objects: OpenAI's ``model`` with ftq's lineage fields, and the
migration plan. Every added field is optional, so the SDK's ``Model`` parses them all and
keeps the extras in ``model_extra``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from service.jobs.wire import ModelObject


class ModelRef(BaseModel):
    id: str | None
    fine_tuning_job_id: str
    provider: str
    base_model: str
    status: str


class FileRef(BaseModel):
    id: str
    filename: str
    bytes: int
    sha256: str
    deleted: bool


class LineageObject(BaseModel):
    model_config = ConfigDict(extra="allow")

    fine_tuning_job_id: str
    provider: str
    provider_kind: str
    account: str
    base_model: str
    model: str
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    seed: int
    training_file: FileRef | None = None
    validation_file: FileRef | None = None
    trained_tokens: int | None = None
    result_files: list[dict[str, Any]] = []
    cost_usd: float | None = None
    created_at: int
    finished_at: int | None = None
    evaluation: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]]
    parent: ModelRef | None = None
    successors: list[ModelRef]
    comparison_with_parent: dict[str, Any] | None = None


class RegisteredModelObject(ModelObject):
    """``GET /v1/models[/{id}]``: a base model or a fine-tune, with ftq's registry fields."""

    provider: str | None = None
    provider_kind: str | None = None
    base_model: str | None = None
    retired: bool | None = None
    parent: ModelRef | None = None
    lineage: LineageObject | None = None


class MigrationTarget(BaseModel):
    provider: str
    model: str


class MigrationPlanItem(BaseModel):
    object: Literal["migration_plan.item"] = "migration_plan.item"
    model: str
    fine_tuning_job_id: str
    provider: str
    base_model: str
    shutdown_date: str
    days_left: int
    retired: bool
    suggested_target: MigrationTarget | None = None
    status: Literal["pending", "in_progress", "migrated"]
    successors: list[dict[str, Any]]


class MigrationPlanObject(BaseModel):
    object: Literal["migration_plan"] = "migration_plan"
    as_of: str
    within_days: int
    data: list[MigrationPlanItem]


class ModelNoticeObject(BaseModel):
    """``data`` of ``model.shutdown_approaching`` and ``model.retired`` webhook events."""

    object: Literal["model"] = "model"
    id: str
    fine_tuning_job_id: str
    provider: str
    base_model: str
    shutdown_date: str
    days_left: int
    threshold_days: int | None = None
    successors: list[dict[str, Any]]
    suggested_target: MigrationTarget | None = None
