"""The evaluation gate: does the fine-tune beat its base model on held-out data?

A job created with ``evaluation: {"eval_id", "gate": {"criterion", "min_delta"},
"checkpoints"}`` (or under its team's default gate) is checked at create: the eval exists in
the team and its items can be built from chat data (``input``, ``ideal``, ``messages``),
and the criterion is one of its testing criteria. When training succeeds the job's
lifecycle moves it to stage ``evaluating`` and enqueues ``evals.gate``. The gate then
samples the held-out data — the job's validation file, or else a deterministic share of the
training file (seeded by the job's seed; it was trained on, so the report says so) — with
the base model, the fine-tuned model and, if asked, each checkpoint, as ordinary eval runs
of that eval (visible under ``/v1/evals/{id}/runs``). When every run has finished it records
on the job: per-model scores for each criterion, the fine-tune's difference from the base on
the gate criterion with a seeded bootstrap 95% confidence interval over the paired items,
the items that flipped either way, the best checkpoint, and the verdict — ``promoted`` when
the difference reaches ``min_delta``, ``rejected`` otherwise (or when a run failed).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import structlog
from sqlmodel import Session, col, select

from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.errors import InvalidRequest, NotFound
from service.evals import items as item_data
from service.evals import service as evals
from service.evals.models import TERMINAL_RUN_STATUSES, EvalGate, EvalOutputItem, EvalRun, RunStatus
from service.files import service as files
from service.jobs import lifecycle
from service.jobs.models import FineTuningJob, JobCheckpoint

log = structlog.get_logger(__name__)

GATE_TASK = "evals.gate"
EVALUATING = "evaluating"
MAX_FLIPPED = 20


# --- at create ----------------------------------------------------------------------------


def check_config(session: Session, team_id: str, value: Any) -> dict[str, Any] | None:
    """The job's ``evaluation`` request (or the team's default), checked; None for none."""
    if value is None:
        value = get_settings().evals.default_gate_for_teams.get(team_id)
        if value is None:
            return None
    if not isinstance(value, dict):
        raise InvalidRequest("evaluation must be an object.", param="evaluation")
    unknown = set(value) - {"eval_id", "gate", "checkpoints"}
    if unknown:
        raise InvalidRequest(
            f"evaluation has unknown fields: {', '.join(sorted(unknown))}.",
            param=f"evaluation.{sorted(unknown)[0]}",
        )
    eval_id = value.get("eval_id")
    if not isinstance(eval_id, str):
        raise InvalidRequest("evaluation.eval_id is required.", param="evaluation.eval_id")
    try:
        record = evals.get_eval(session, team_id, eval_id)
    except NotFound:
        raise InvalidRequest(
            f"No eval found with id '{eval_id}'.", param="evaluation.eval_id", code="eval_not_found"
        ) from None
    names = [c["name"] for c in record.testing_criteria]
    gate = value.get("gate") or {}
    if not isinstance(gate, dict):
        raise InvalidRequest("evaluation.gate must be an object.", param="evaluation.gate")
    criterion = gate.get("criterion", names[0])
    if criterion not in names:
        raise InvalidRequest(
            f"evaluation.gate.criterion '{criterion}' is not a testing criterion of {eval_id} "
            f"(it has: {', '.join(names)}).",
            param="evaluation.gate.criterion",
            code="criterion_not_found",
        )
    min_delta = gate.get("min_delta", 0.0)
    if not isinstance(min_delta, int | float) or not -1 <= min_delta <= 1:
        raise InvalidRequest(
            "evaluation.gate.min_delta must be a number between -1 and 1.",
            param="evaluation.gate.min_delta",
        )
    required = set(record.data_source_config["item_schema"].get("required") or [])
    if not required <= set(item_data.CHAT_ITEM_FIELDS):
        raise InvalidRequest(
            f"The gate builds items {{input, ideal, messages}} from the job's chat data, but "
            f"{eval_id} requires {', '.join(sorted(required - set(item_data.CHAT_ITEM_FIELDS)))}.",
            param="evaluation.eval_id",
            code="eval_not_gateable",
        )
    checkpoints = value.get("checkpoints", False)
    if not isinstance(checkpoints, bool):
        raise InvalidRequest(
            "evaluation.checkpoints must be a boolean.", param="evaluation.checkpoints"
        )
    return {
        "eval_id": eval_id,
        "gate": {"criterion": criterion, "min_delta": float(min_delta)},
        "checkpoints": checkpoints,
    }


# --- running ------------------------------------------------------------------------------


def _holdout(session: Session, job: FineTuningJob) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    settings = get_settings().evals
    if job.validation_file_id:
        record = files.get_file(session, job.team_id, job.validation_file_id)
        lines = list(
            item_data.read_lines(
                files.file_path(record), param="validation_file", limit=settings.max_items
            )
        )
        chosen = list(range(len(lines)))[: settings.holdout_max_items]
        source: dict[str, Any] = {"source": "validation_file", "file_id": record.id}
    else:
        record = files.get_file(session, job.team_id, job.training_file_id)
        lines = list(
            item_data.read_lines(
                files.file_path(record), param="training_file", limit=settings.max_items
            )
        )
        chosen = item_data.holdout_split(
            lines, settings.holdout_fraction, job.seed, settings.holdout_max_items
        )
        source = {
            "source": "training_split",
            "file_id": record.id,
            "seed": job.seed,
            "fraction": settings.holdout_fraction,
            "note": "The job has no validation file: these items were also trained on, so the "
            "gate measures fit, not generalisation. Give a validation_file for a held-out test.",
        }
    result = []
    for index in chosen:
        item, _ = item_data.to_item(lines[index])
        if all(f in item for f in item_data.CHAT_ITEM_FIELDS):
            result.append({"item": item})
    return result, {**source, "items": len(result)}


def _models(session: Session, job: FineTuningJob, with_checkpoints: bool) -> dict[str, str]:
    assert job.fine_tuned_model is not None
    models = {"base": job.model, "fine_tuned": job.fine_tuned_model}
    if with_checkpoints:
        for checkpoint in session.exec(
            select(JobCheckpoint)
            .where(JobCheckpoint.job_id == job.id)
            .order_by(col(JobCheckpoint.step_number))
        ):
            if checkpoint.fine_tuned_model_checkpoint != job.fine_tuned_model:
                models[f"checkpoint:{checkpoint.step_number}"] = (
                    checkpoint.fine_tuned_model_checkpoint
                )
    return models


def run_gate(job_id: str, owner: str) -> str:
    """One step of a job's gate: start its runs, or record the verdict once they finished.
    The job row's lock serialises steps, so a duplicate message records nothing twice."""
    with session_scope() as session:
        job = session.exec(
            select(FineTuningJob).where(FineTuningJob.id == job_id).with_for_update()
        ).first()
        if job is None or not job.evaluation_config or job.fine_tuned_model is None:
            return "nothing_to_do"
        if job.evaluation is not None or job.stage != EVALUATING:
            return "already_recorded"
        gate = session.get(EvalGate, job.id)
        if gate is None:
            return _start(session, job)
        if gate.status != "running":
            return "busy"
        runs = {role: session.get(EvalRun, run_id) for role, run_id in gate.runs.items()}
        if any(r is None or r.status not in TERMINAL_RUN_STATUSES for r in runs.values()):
            return "waiting"
        evaluation = _evaluate(session, job, gate, runs)  # type: ignore[arg-type]
        _record(session, job, evaluation)
        gate.status = "recorded"
        gate.updated_at = utcnow()
        gate.lease_owner = gate.lease_expires_at = None
        session.add(gate)
        log.info("gate_recorded", job_id=job.id, verdict=evaluation["verdict"])
        return evaluation["verdict"]


def _start(session: Session, job: FineTuningJob) -> str:
    config = job.evaluation_config or {}
    items, holdout = _holdout(session, job)
    gate = EvalGate(id=job.id, team_id=job.team_id, eval_id=config["eval_id"], holdout=holdout)
    if not items:
        gate.status = "recorded"
        session.add(gate)
        _record(
            session,
            job,
            _verdict_without_runs(
                config, holdout, "The held-out data has no chat examples to evaluate."
            ),
        )
        return "rejected"
    for role, model in _models(session, job, bool(config.get("checkpoints"))).items():
        body = {
            "name": f"gate {job.id} {role}",
            "metadata": {"fine_tuning_job_id": job.id, "gate_role": role},
            "data_source": {
                "type": "completions",
                "model": model,
                "source": {"type": "file_content", "content": items},
                "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                "sampling_params": {"temperature": 0, "seed": job.seed},
            },
        }
        try:
            run = evals.create_run(
                session, job.team_id, config["eval_id"], body, gate_job_id=job.id, gate_role=role
            )
        except (InvalidRequest, NotFound) as error:
            gate.status = "recorded"
            session.add(gate)
            _record(
                session,
                job,
                _verdict_without_runs(
                    config, holdout, f"The {role} run could not start: {error.message}"
                ),
            )
            return "rejected"
        gate.runs = {**gate.runs, role: run.id}
    session.add(gate)
    return "started"


def _verdict_without_runs(
    config: dict[str, Any], holdout: dict[str, Any], reason: str
) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.evaluation",
        "eval_id": config.get("eval_id"),
        "criterion": (config.get("gate") or {}).get("criterion"),
        "min_delta": (config.get("gate") or {}).get("min_delta"),
        "holdout": holdout,
        "verdict": "rejected",
        "reason": reason,
    }


def _item_scores(session: Session, run_id: str, criterion: str) -> dict[int, tuple[float, bool]]:
    scores = {}
    for row in session.exec(select(EvalOutputItem).where(EvalOutputItem.run_id == run_id)):
        result = next((r for r in row.results if r.get("name") == criterion), None)
        if row.status == "error" or result is None:
            scores[row.datasource_item_id] = (0.0, False)
        else:
            scores[row.datasource_item_id] = (
                float(result.get("score") or 0.0),
                bool(result.get("passed")),
            )
    return scores


def bootstrap_ci(differences: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean paired difference (seeded)."""
    if len(differences) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(samples, len(differences)))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def interval_object(low: float, high: float) -> dict[str, Any]:
    """How an interval from ``bootstrap_ci`` is reported (gate and parent comparison)."""
    settings = get_settings().evals
    return {
        "level": 0.95,
        "low": round(low, 6),
        "high": round(high, 6),
        "method": "paired percentile bootstrap",
        "samples": settings.bootstrap_samples,
        "seed": settings.bootstrap_seed,
    }


def _evaluate(
    session: Session, job: FineTuningJob, gate: EvalGate, runs: dict[str, EvalRun]
) -> dict[str, Any]:
    config = job.evaluation_config or {}
    criterion = config["gate"]["criterion"]
    min_delta = float(config["gate"]["min_delta"])
    settings = get_settings().evals
    record = evals.get_eval(session, job.team_id, gate.eval_id)
    scores: dict[str, Any] = {}
    for role, run in runs.items():
        summary = evals.run_object(session, run, record)
        scores[role] = {
            "model": run.model,
            "run_id": run.id,
            "status": run.status,
            "criteria": {
                r["testing_criteria"]: {
                    "passed": r["passed"],
                    "failed": r["failed"],
                    "pass_rate": round(r["passed"] / max(1, r["passed"] + r["failed"]), 6),
                    "mean_score": r["average_score"],
                }
                for r in summary["per_testing_criteria_results"]
            },
            "result_counts": summary["result_counts"],
        }
    base_items = _item_scores(session, runs["base"].id, criterion)
    tuned_items = _item_scores(session, runs["fine_tuned"].id, criterion)
    shared = sorted(set(base_items) & set(tuned_items))
    base = np.array([base_items[i][0] for i in shared], dtype=float)
    tuned = np.array([tuned_items[i][0] for i in shared], dtype=float)
    differences = tuned - base
    delta = float(differences.mean()) if len(shared) else 0.0
    low, high = bootstrap_ci(differences, settings.bootstrap_samples, settings.bootstrap_seed)
    items = runs["base"].items

    def example(index: int) -> dict[str, Any]:
        item = items[index]["item"] if index < len(items) else {}
        return {
            "datasource_item_id": index,
            "input": str(item.get("input", ""))[:500],
            "ideal": str(item.get("ideal", ""))[:500],
        }

    regressions = [i for i in shared if base_items[i][1] and not tuned_items[i][1]]
    improvements = [i for i in shared if tuned_items[i][1] and not base_items[i][1]]
    checkpoint_scores = []
    for role, run in runs.items():
        if role.startswith("checkpoint:") or role == "fine_tuned":
            values = _item_scores(session, run.id, criterion)
            mean = sum(v[0] for v in values.values()) / len(values) if values else 0.0
            checkpoint_scores.append(
                {
                    "model": run.model,
                    "step": None if role == "fine_tuned" else int(role.split(":")[1]),
                    "mean_score": round(mean, 6),
                }
            )
    best = max(checkpoint_scores, key=lambda c: (c["mean_score"], c["step"] is None), default=None)
    failed = [role for role, run in runs.items() if run.status != RunStatus.completed]
    if failed:
        verdict, reason = "rejected", f"The {', '.join(failed)} run did not complete."
    elif delta >= min_delta:
        verdict, reason = (
            "promoted",
            f"The fine-tune's {criterion} is {delta:+.3f} against the base "
            f"(needed {min_delta:+.3f}).",
        )
    else:
        verdict, reason = (
            "rejected",
            f"The fine-tune's {criterion} is {delta:+.3f} against the base, "
            f"short of {min_delta:+.3f}.",
        )
    return {
        "object": "fine_tuning.job.evaluation",
        "eval_id": gate.eval_id,
        "criterion": criterion,
        "min_delta": min_delta,
        "holdout": gate.holdout,
        "scores": scores,
        "delta": round(delta, 6),
        "confidence_interval": interval_object(low, high),
        "items": len(shared),
        "flipped": {
            "base_passed_tuned_failed": [example(i) for i in regressions[:MAX_FLIPPED]],
            "tuned_passed_base_failed": [example(i) for i in improvements[:MAX_FLIPPED]],
            "counts": {
                "base_passed_tuned_failed": len(regressions),
                "tuned_passed_base_failed": len(improvements),
            },
        },
        "checkpoints": checkpoint_scores,
        "best_checkpoint": best["model"] if best else None,
        "verdict": verdict,
        "reason": reason,
    }


def _record(session: Session, job: FineTuningJob, evaluation: dict[str, Any]) -> None:
    # The state machine moves the stage, stores the result and writes the webhook row.
    lifecycle.record_evaluation(session, job, evaluation)


def reconcile() -> list[str]:
    """Jobs in stage ``evaluating`` whose gate is not progressing: enqueue the gate again
    (it starts missing runs, or records a verdict whose message was lost)."""
    stale = utcnow() - dt.timedelta(seconds=get_settings().evals.gate_stale_seconds)
    with session_scope() as session:
        jobs = list(
            session.exec(
                select(FineTuningJob.id, FineTuningJob.updated_at).where(
                    FineTuningJob.stage == EVALUATING, col(FineTuningJob.evaluation).is_(None)
                )
            )
        )
        due = []
        for job_id, _updated in jobs:
            gate = session.get(EvalGate, job_id)
            if gate is None or (gate.status == "running" and _as_aware(gate.updated_at) < stale):
                due.append(job_id)
                if gate is not None:
                    gate.updated_at = utcnow()
                    session.add(gate)
            elif gate.status == "running":
                runs = [session.get(EvalRun, r) for r in gate.runs.values()]
                if all(r is not None and r.status in TERMINAL_RUN_STATUSES for r in runs):
                    due.append(job_id)
        for job_id in due:
            enqueue(GATE_TASK, job_id)
    return due


def _as_aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def gate_status(session: Session, team_id: str, job_id: str) -> dict[str, Any]:
    from service.jobs.service import get_job

    job = get_job(session, team_id, job_id)
    gate = session.get(EvalGate, job.id)
    if job.evaluation is not None:
        status = "recorded"
    elif job.evaluation_config is None:
        status = "not_requested"
    else:
        status = "running" if gate is not None else "pending"
    return {
        "object": "fine_tuning.job.evaluation_gate",
        "fine_tuning_job_id": job.id,
        "status": status,
        "config": job.evaluation_config,
        "runs": gate.runs if gate else {},
        "evaluation": job.evaluation,
    }
