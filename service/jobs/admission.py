"""Admission: what every job passes before its runner may start it, whatever its provider.

In order, under the job's row lock: a cancel asked for meanwhile wins; files still being
validated make the job wait (stage ``validating``); a blocked file fails it; the budget hold
is taken if the report arrived after the create; prompt/completion data for a chat model is
converted; and the job takes a concurrency slot or waits in ftq's fair queue. The runner's
``admit`` then moves it on (upload for an upstream job, the training queue for a local one).
"""

from __future__ import annotations

from sqlmodel import Session

from service.db import session_scope
from service.errors import BudgetExceeded
from service.files import compat
from service.files.models import File
from service.jobs import budgets, capacity, failures, lifecycle
from service.jobs.models import FineTuningJob, JobStage
from service.jobs.runners import runner_for
from service.jobs.transitions import add_event

CHAT_INCAPABLE_MODELS = ("babbage-002", "davinci-002")

# Stages where admission has nothing left to decide.
_PAST_ADMISSION = frozenset(
    {JobStage.waiting, JobStage.tracking, JobStage.training, JobStage.evaluating, JobStage.done}
)


def is_chat_model(model: str) -> bool:
    base = model.split(":")[1] if model.startswith("ft:") else model
    return not base.startswith(CHAT_INCAPABLE_MODELS)


def _convert_for_chat(session: Session, job: FineTuningJob, training: File) -> None:
    """The article's prompt/completion data given for a chat model: convert instead of
    letting the provider reject it, and say so in the job and in the file's report."""
    from service.files.derived import convert_to_chat

    converted = convert_to_chat(session, job.team_id, training.id)
    job.converted_training_file_id = converted.id
    add_event(
        session,
        job,
        f"Training file {training.id} is prompt/completion data; {job.model} is a chat model, "
        f"so ftq converted it to chat format as {converted.id}.",
        level="warn",
    )
    report = dict(training.report or {})
    report["findings"] = [
        *report.get("findings", []),
        {
            "line": None,
            "code": "converted_to_chat",
            "severity": "warning",
            "message": f"Converted to chat for {job.model} (job {job.id}) as {converted.id}.",
            "suggestion": "Upload chat-format data (messages) to control the conversion.",
            "file": "training",
        },
    ]
    counts = dict(report.get("counts_by_code", {}))
    counts["converted_to_chat"] = counts.get("converted_to_chat", 0) + 1
    report["counts_by_code"] = counts
    training.report = report
    session.add(training)


def admit(job_id: str) -> str | None:
    """Run the gate; the job's provider when the calling submit task should start the job
    itself now, else None."""
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.stage in _PAST_ADMISSION:
            return None
        if job.stage in (JobStage.uploading, JobStage.creating):
            return job.provider  # a started submission resumes where it stopped
        if job.cancel_requested:
            lifecycle.cancel(session, job, "Job cancelled before it reached the provider.")
            return None
        runner = runner_for(job.provider)
        files = [
            f
            for f in (
                session.get(File, job.training_file_id),
                session.get(File, job.validation_file_id) if job.validation_file_id else None,
            )
            if f is not None
        ]
        pending = [f for f in files if f.validation_status in ("pending", "running")]
        if pending:
            if job.stage != JobStage.validating:
                lifecycle.move(
                    session,
                    job,
                    "await_reports",
                    message=f"Waiting for the pre-flight report of {pending[0].id}.",
                )
            return None
        blocked = [f for f in files if f.verdict == "block"]
        if blocked:
            record = blocked[0]
            errors = (record.report or {}).get("counts_by_severity", {}).get("error", 0)
            lifecycle.fail(
                session,
                job,
                failures.job_error(
                    failures.DATA_FORMAT,
                    f"File {record.id} failed ftq's pre-flight checks with {errors} error(s) "
                    f"(GET /v1/files/{record.id}/validation).",
                    param="training_file"
                    if record.id == job.training_file_id
                    else "validation_file",
                ),
            )
            return None
        training = files[0]
        # Reports that arrived after the create: a format that does not fit the model or
        # method fails here (data_format), instead of upstream.
        misfit = compat.job_misfit(
            training,
            files[1] if len(files) > 1 else None,
            job.model,
            (job.method or {}).get("type"),
            local=job.provider == "local",
        )
        if misfit is not None:
            lifecycle.fail(
                session,
                job,
                failures.job_error(failures.DATA_FORMAT, misfit.message, param=misfit.param),
            )
            return None
        if job.estimated_cost_usd is None:
            # The report arrived after the create: the budget hold is taken now.
            estimate = runner.estimate_cost(training, job)
            if estimate is not None:
                try:
                    budgets.reserve(session, job, estimate)
                except BudgetExceeded as refused:
                    lifecycle.fail(
                        session,
                        job,
                        {"code": "budget_exceeded", "message": refused.message, "param": None},
                    )
                    return None
        if (
            training.format == "prompt_completion"
            and is_chat_model(job.model)
            and job.converted_training_file_id is None
        ):
            _convert_for_chat(session, job, training)
        capacity.lock_account(session, job.account)
        if capacity.others_waiting(session, job) or not capacity.has_slot(session, job):
            capacity.send_to_queue(
                session,
                job,
                "Waiting in ftq's queue: the team or provider account is at its limit.",
            )
            return None
        # Taking the slot now, under the account lock, so concurrent admissions count it.
        capacity.take_slot(session, job, inline=True)
        return job.provider


def submit(job_id: str, owner: str) -> None:
    """The submit task: admission, then the job's runner; safe to run any number of times."""
    provider = admit(job_id)
    if provider is not None:
        runner_for(provider).start(job_id, owner)
