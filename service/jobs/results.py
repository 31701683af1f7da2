"""Result files: the provider's per-step metrics CSV, copied into ftq when a job succeeds,
so the loss curve and the file stay with the team even after the provider deletes them.

``results_pending`` stays set until every file is copied or known to be gone, so the
reconciler re-enqueues an import whose message was lost; a file the provider no longer has
is left as its upstream id with an event saying so."""

from __future__ import annotations

import structlog
from sqlmodel import select

from service.db import session_scope, utcnow
from service.files.models import File
from service.files.service import store_result_file
from service.jobs.models import FineTuningJob
from service.jobs.transitions import add_event
from service.providers.base import ProviderError
from service.providers.registry import fine_tuning_provider_for_account

log = structlog.get_logger(__name__)


def import_result_files(job_id: str) -> None:
    """Replace the job's upstream result file ids by ftq copies; idempotent."""
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None or not job.result_files:
            return
        owned = set(
            session.exec(
                select(File.id).where(
                    File.team_id == job.team_id,
                    File.id.in_(job.result_files),  # type: ignore[attr-defined]
                )
            )
        )
        pending = [fid for fid in job.result_files if fid not in owned]
        account, team_id = job.account, job.team_id
    if not pending:
        _done(job_id, [])
        return
    provider = fine_tuning_provider_for_account(account)
    downloaded: dict[str, bytes] = {}
    gone: list[str] = []
    for upstream_id in pending:
        try:
            downloaded[upstream_id] = provider.download_file(upstream_id)
        except ProviderError as error:
            log.warning(
                "result_file_unavailable", job_id=job_id, file=upstream_id, error=error.message
            )
            if not error.retryable:
                gone.append(upstream_id)
    if len(downloaded) + len(gone) < len(pending):
        # Transient trouble: keep what we have for now; the reconciler comes back.
        with session_scope() as session:
            job = session.get(FineTuningJob, job_id, with_for_update=True)
            if job is not None:
                job.updated_at = utcnow()
                session.add(job)
        if not downloaded:
            return
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or not job.result_files:
            return
        for upstream_id in gone:
            add_event(
                session,
                job,
                f"Result file {upstream_id} is no longer available at the provider.",
                level="warn",
            )
        if len(downloaded) + len(gone) >= len(pending):
            job.results_pending = False
        replaced = []
        for file_id in job.result_files:
            if file_id in downloaded:
                copy = store_result_file(session, team_id, "step_metrics.csv", downloaded[file_id])
                replaced.append(copy.id)
                add_event(session, job, f"Result file {file_id} copied into ftq as {copy.id}.")
            else:
                replaced.append(file_id)
        job.result_files = replaced
        session.add(job)


def _done(job_id: str, _: list[str]) -> None:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is not None and job.results_pending:
            job.results_pending = False
            session.add(job)
