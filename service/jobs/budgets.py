"""Monthly spend limits per team.

Creating a job reserves its estimated cost (from the training file's pre-flight report);
while the job is active its estimate counts against the month, and once it ends its actual
cost (trained tokens at the configured price) replaces the hold. A job that would take the
team over its budget is refused with the figures.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlmodel import Field, Session, SQLModel, select

from service.config import get_settings
from service.db import utcnow
from service.errors import BudgetExceeded, InvalidRequest
from service.files.models import File
from service.files.validation.estimate import estimate_for_job
from service.files.validation.report import Report
from service.files.validation.settings import price_per_million_for
from service.jobs.models import TERMINAL_STATUSES, FineTuningJob


class TeamBudget(SQLModel, table=True):
    __tablename__ = "team_budgets"

    team_id: str = Field(foreign_key="teams.id", primary_key=True, max_length=32)
    monthly_budget_usd: float | None = None  # None: unlimited
    updated_at: dt.datetime = Field(default_factory=utcnow)


def month_bounds(month: str | None = None) -> tuple[dt.datetime, dt.datetime, str]:
    if month is None:
        now = utcnow()
        start = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    else:
        try:
            start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
        except ValueError:
            raise InvalidRequest("month must look like 2026-11.", param="month") from None
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end, start.strftime("%Y-%m")


def budget_for(session: Session, team_id: str) -> float | None:
    row = session.get(TeamBudget, team_id)
    if row is not None:
        return row.monthly_budget_usd
    return get_settings().default_monthly_budget_usd


def set_budget(session: Session, team_id: str, monthly_budget_usd: float | None) -> TeamBudget:
    row = session.get(TeamBudget, team_id) or TeamBudget(team_id=team_id)
    row.monthly_budget_usd = monthly_budget_usd
    row.updated_at = utcnow()
    session.add(row)
    return row


def cost_of_tokens(model: str, trained_tokens: int | None) -> float | None:
    """Trained tokens at the configured price of ``model``."""
    if not trained_tokens:
        return None
    price = price_per_million_for(model, get_settings().validation)
    return round(trained_tokens * price / 1_000_000, 6)


def actual_cost(job: FineTuningJob) -> float | None:
    """What the job cost, as its runner bills it (ftq's own workers: nothing per token)."""
    from service.jobs.runners import runner_for  # runners import this module

    return runner_for(job.provider).actual_cost(job)


def estimate_cost(training: File, model: str, n_epochs: int | str) -> float | None:
    """The job's estimated cost, or None while the file's report is not ready."""
    if training.validation_status != "completed" or not training.report:
        return None
    report = Report.model_validate(training.report)
    epochs: int | Literal["auto"] = n_epochs if isinstance(n_epochs, int) else "auto"
    return estimate_for_job(report, model, epochs, get_settings().validation).cost_usd


def job_epochs(job: FineTuningJob) -> int | str:
    method = job.method or {}
    section = method.get(method.get("type", ""), {}) or {}
    hyper = section.get("hyperparameters") or job.hyperparameters or {}
    epochs = hyper.get("n_epochs")
    return epochs if isinstance(epochs, int) else "auto"


def _month_jobs(
    session: Session, team_id: str, month: str | None
) -> tuple[list[FineTuningJob], str]:
    start, end, label = month_bounds(month)
    jobs = list(
        session.exec(
            select(FineTuningJob).where(
                FineTuningJob.team_id == team_id,
                FineTuningJob.created_at >= start,  # type: ignore[operator]
                FineTuningJob.created_at < end,  # type: ignore[operator]
            )
        )
    )
    return jobs, label


def _committed(job: FineTuningJob) -> float:
    """What a job counts against the budget: its hold while active, its cost once ended."""
    if job.status in TERMINAL_STATUSES:
        return actual_cost(job) or 0.0
    return job.estimated_cost_usd or 0.0


def eval_spend(session: Session, team_id: str, month: str | None = None) -> float:
    """What the team's eval runs spent in the month (sampling and judge calls)."""
    from service.evals.service import eval_spend as spend

    return spend(session, team_id, month)


def reserve(session: Session, job: FineTuningJob, estimate_usd: float) -> None:
    """Hold ``estimate_usd`` for ``job`` or raise BudgetExceeded stating the figures."""
    # Serialise reservations per team so two creates cannot both fit under the limit.
    from service.tenants.limits import lock_team

    lock_team(session, job.team_id)
    budget = budget_for(session, job.team_id)
    if budget is not None:
        jobs, label = _month_jobs(session, job.team_id, None)
        committed = sum(_committed(j) for j in jobs if j.id != job.id)
        committed += eval_spend(session, job.team_id)
        if committed + estimate_usd > budget:
            raise BudgetExceeded(
                f"This job's estimated cost of ${estimate_usd:.2f} would take your team over its "
                f"monthly budget of ${budget:.2f} for {label}: ${committed:.2f} is already spent "
                f"or reserved, leaving ${max(0.0, budget - committed):.2f}.",
                param="training_file",
            )
    job.estimated_cost_usd = estimate_usd
    session.add(job)


def usage(session: Session, team_id: str, month: str | None = None) -> dict[str, Any]:
    jobs, label = _month_jobs(session, team_id, month)
    budget = budget_for(session, team_id)
    evals_usd = eval_spend(session, team_id, month)
    committed = sum(_committed(j) for j in jobs) + evals_usd
    return {
        "object": "usage",
        "team_id": team_id,
        "month": label,
        "jobs": len(jobs),
        "jobs_by_status": {
            status: sum(1 for j in jobs if j.status == status)
            for status in sorted({j.status for j in jobs})
        },
        "trained_tokens": sum(j.trained_tokens or 0 for j in jobs),
        "estimated_cost_usd": round(sum(j.estimated_cost_usd or 0.0 for j in jobs), 6),
        "actual_cost_usd": round(sum(actual_cost(j) or 0.0 for j in jobs), 6),
        "reserved_usd": round(
            sum(j.estimated_cost_usd or 0.0 for j in jobs if j.status not in TERMINAL_STATUSES), 6
        ),
        "budget_usd": budget,
        "remaining_usd": None if budget is None else round(max(0.0, budget - committed), 6),
        "eval_cost_usd": evals_usd,
    }
