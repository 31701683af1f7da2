"""Evals, runs, output items and grader answers as typed wire objects.

Field names and types are OpenAI's (``openai.types.evals``, ``openai.types.graders``,
``openai.types.fine_tuning.alpha``); ftq's own fields are optional and listed after them.
Every class allows extra fields, so the dicts the service builds pass through whole and the
SDK keeps ftq's extras in ``model_extra``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class EvalObject(_Open):
    object: Literal["eval"] = "eval"
    id: str
    name: str
    created_at: int
    metadata: dict[str, str] | None = None
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]
    # ftq: the template that filled the eval in (name, file, labels, fields).
    template: dict[str, Any] | None = None


class EvalDeleted(_Open):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool
    eval_id: str


class ResultCounts(_Open):
    total: int
    passed: int
    failed: int
    errored: int


class CriterionResult(_Open):
    testing_criteria: str
    passed: int
    failed: int
    # ftq: the mean score of the criterion (its pass rate for pass/fail graders).
    average_score: float | None = None


class ModelUsage(_Open):
    model_name: str
    invocation_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int


class EvalApiError(_Open):
    code: str
    message: str


class EvalRunObject(_Open):
    object: Literal["eval.run"] = "eval.run"
    id: str
    eval_id: str
    name: str
    model: str
    status: str
    created_at: int
    data_source: dict[str, Any]
    metadata: dict[str, str] | None = None
    error: EvalApiError
    report_url: str
    result_counts: ResultCounts
    per_testing_criteria_results: list[CriterionResult]
    per_model_usage: list[ModelUsage]
    # ftq: the run's cost, its corpus metrics (template evals) and the job it gates.
    cost_usd: float | None = None
    metrics: dict[str, Any] | None = None
    fine_tuning_job_id: str | None = None


class EvalRunDeleted(_Open):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool
    run_id: str


class OutputItemObject(_Open):
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    id: str
    run_id: str
    eval_id: str
    created_at: int
    status: str
    datasource_item_id: int
    datasource_item: dict[str, Any]
    results: list[dict[str, Any]]
    sample: dict[str, Any]


class EvalTemplate(_Open):
    object: Literal["eval.template"] = "eval.template"
    id: str
    metrics: list[str]


class GraderRunMetadata(_Open):
    name: str
    type: str
    errors: dict[str, Any]
    execution_time: float
    scores: dict[str, Any]
    sampled_model_name: str | None = None
    token_usage: int | None = None


class GraderRunResponse(_Open):
    reward: float
    metadata: GraderRunMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]


class GraderValidateResponse(_Open):
    grader: dict[str, Any] | None = None


class JobEvaluationGate(_Open):
    """ftq: a fine-tuning job's evaluation gate and, once recorded, its evaluation."""

    object: Literal["fine_tuning.job.evaluation_gate"] = "fine_tuning.job.evaluation_gate"
    fine_tuning_job_id: str
    status: Literal["not_requested", "pending", "running", "recorded"]
    config: dict[str, Any] | None = None
    runs: dict[str, str]
    evaluation: dict[str, Any] | None = None
