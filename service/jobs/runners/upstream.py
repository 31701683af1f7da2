"""The upstream runner: every provider reached through the ``openai`` SDK (OpenAI, Azure
OpenAI, compatible base URLs). Its two halves are ``service.jobs.submission`` (upload and
create, exactly once) and ``service.jobs.tracking`` (the sweeper and the per-job sync)."""

from __future__ import annotations

from sqlmodel import Session, select

from service.config import get_settings
from service.db import utcnow
from service.dispatch import enqueue
from service.errors import InvalidRequest
from service.files.models import File
from service.jobs import budgets, lifecycle, submission, tracking
from service.jobs.models import SUBMISSION_STAGES, FineTuningJob, JobStage, JobStatus
from service.jobs.runners.base import ProviderRef
from service.jobs.schemas import CreateJobInput
from service.jobs.transitions import add_event
from service.providers.base import FineTuningProvider, ProviderError
from service.providers.errors import api_error_from_provider
from service.providers.registry import fine_tuning_provider_for_account, provider_for_team


class UpstreamRunner:
    name = "upstream"

    def check_request(self, session: Session, team_id: str, request: CreateJobInput) -> ProviderRef:
        _refuse_local_extensions(request)
        provider = provider_for_team(session, team_id)
        if provider.name == "together":
            _check_listed(provider, request.model)  # Together's own catalogue
        else:
            _check_model(session, team_id, request.model)
        # A provider past its job cut-off (OpenAI: 2027-01-06) is refused here, not upstream.
        from service.registry.cutoffs import refuse_if_closed
        from service.registry.shutdown import kind_of_provider

        refuse_if_closed(kind_of_provider(provider))
        return ProviderRef(provider.name, provider.account)

    def admit(self, session: Session, job: FineTuningJob, *, inline: bool = False) -> None:
        if inline:
            lifecycle.move(session, job, "admit_upstream")
            return
        lifecycle.move(
            session,
            job,
            "admit_upstream",
            message="A concurrency slot is free; submitting to the provider.",
        )
        enqueue("jobs.submit", job.id)

    def start(self, job_id: str, owner: str) -> None:
        submission.start(job_id, owner)

    def cancel(self, session: Session, job: FineTuningJob) -> FineTuningJob:
        if (
            job.stage in (*SUBMISSION_STAGES, JobStage.waiting)
            and job.upstream_job_id is None
            and job.stage != JobStage.creating
        ):
            # Nothing exists upstream yet: cancel here. A submit task that wakes later sees it.
            lifecycle.cancel(session, job, "Job cancelled before it reached the provider.")
            return job
        # An upstream job exists (or its create is in flight): pass the cancel on now; the
        # poll that carries it runs as soon as this commits (and again at every poll).
        job.next_poll_at = utcnow()
        session.add(job)
        add_event(session, job, "Cancellation requested; passing it to the provider.")
        if job.upstream_job_id is not None:
            enqueue("jobs.poll_now", job.id)
        return job

    def control(self, session: Session, job: FineTuningJob, action: str) -> FineTuningJob:
        allowed = {"pause": {"running", "queued"}, "resume": {"paused"}}[action]
        if job.stage == JobStage.waiting or (
            job.upstream_job_id is None and job.status == JobStatus.queued
        ):
            raise InvalidRequest(
                f"Job {job.id} is waiting in ftq's queue and has nothing at the provider to "
                f"{action} yet; cancel it instead if it should not run.",
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
        provider = fine_tuning_provider_for_account(job.account, session=session)
        call = provider.pause_job if action == "pause" else provider.resume_job
        try:
            upstream = call(job.upstream_job_id)
        except ProviderError as error:
            raise api_error_from_provider(error) from error
        session.refresh(job, with_for_update=True)
        lifecycle.observe(session, job, upstream.status)
        add_event(
            session,
            job,
            f"Job {'paused' if action == 'pause' else 'resumed'} at the team's request.",
        )
        # Poll soon so events and timing catch up with the new state.
        job.poll_interval_seconds = None
        job.next_poll_at = utcnow()
        session.add(job)
        return job

    def reconcile(self) -> list[str]:
        return tracking.reconcile()

    def estimate_cost(self, training: File, job: FineTuningJob) -> float | None:
        return budgets.estimate_cost(training, job.model, budgets.job_epochs(job))

    def actual_cost(self, job: FineTuningJob) -> float | None:
        return budgets.cost_of_tokens(job.model, job.trained_tokens)


def _refuse_local_extensions(request: CreateJobInput) -> None:
    """Extensions only ftq's own trainer understands would be dropped silently upstream."""
    if request.resources is not None:
        raise InvalidRequest(
            "resources applies to jobs on the local provider only (provider: 'local').",
            param="resources",
            code="invalid_resources",
        )
    dpo = request.method.dpo if request.method else None
    if dpo is not None and (dpo.lora is not None or dpo.sft_weight is not None):
        raise InvalidRequest(
            "method.dpo.lora and method.dpo.sft_weight apply to the local provider only.",
            param="method.dpo",
            code="invalid_method",
        )


def _check_listed(provider: FineTuningProvider, model: str) -> None:
    try:
        listed = {m["id"] for m in provider.list_models()}
    except ProviderError as error:
        raise api_error_from_provider(error) from error
    if model not in listed:
        raise InvalidRequest(
            f"Model '{model}' is not offered by the team's provider ({provider.name}).",
            param="model",
            code="model_not_available",
        )


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


__all__ = ["UpstreamRunner", "submission"]
