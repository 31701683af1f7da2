"""The pre-flight report of an uploaded file, produced by a worker right after upload."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlmodel import Session, select

from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.files.models import File
from service.files.service import file_object, file_path
from service.files.validation.report import Finding, Report
from service.files.validation.screening import apply_screening, screen_file
from service.files.validation.settings import ValidationSettings
from service.files.validation.validator import validate_file
from service.providers.base import ProviderError
from service.providers.registry import provider_for_account, provider_for_team
from service.webhooks.outbox import record_event

log = structlog.get_logger(__name__)

MAX_VALIDATION_ATTEMPTS = 5
MODERATION_MODEL = "omni-moderation-latest"


def _claim(file_id: str) -> bool:
    now = utcnow()
    with session_scope() as session:
        result = session.execute(
            sa.update(File)
            .where(
                File.id == file_id,  # type: ignore[arg-type]
                File.validation_status.in_(["pending", "running"]),  # type: ignore[attr-defined]
                sa.or_(
                    File.validation_lease_expires_at.is_(None),  # type: ignore[union-attr]
                    File.validation_lease_expires_at < now,  # type: ignore[operator]
                ),
            )
            .values(
                validation_status="running",
                validation_lease_expires_at=now
                + dt.timedelta(seconds=get_settings().lease_seconds * 5),
                validation_attempts=File.validation_attempts + 1,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def validate(file_id: str, *, final_attempt: bool = True) -> None:
    """Validate and screen one file and store its report; idempotent (a finished file is
    left alone). A transient moderation failure raises ProviderError unless this is the
    caller's final attempt, so the task can retry before settling for a warning."""
    if not _claim(file_id):
        return
    with session_scope() as session:
        record = session.get(File, file_id)
        assert record is not None
        path, attempts = file_path(record), record.validation_attempts
        filename, account = record.filename, _account_for(session, record.team_id)
    if attempts > MAX_VALIDATION_ATTEMPTS:
        _store(file_id, None, error="validation crashed repeatedly")
        return
    settings = get_settings().validation
    try:
        report = validate_file(path, settings=settings)
    except Exception as exc:  # a validator bug must not leave the file pending forever
        log.exception("validation_failed", file_id=file_id)
        _store(file_id, None, error=f"validator error: {exc}")
        return
    report = _screen(report, path, account, settings, final_attempt=final_attempt)
    document = report.model_dump(mode="json")
    document["path"] = filename  # never the server's storage path
    _store(file_id, document)


def _screen(
    report: Report, path: Path, account: str, settings: ValidationSettings, *, final_attempt: bool
) -> Report:
    """Moderation over every example or a seeded sample, through the team's provider."""
    if report.format == "unknown" or report.examples == 0:
        return report
    provider = provider_for_account(account)
    model = MODERATION_MODEL

    def moderate(batch: list[str]) -> list[dict]:
        return provider.moderate(batch, model)

    try:
        findings, summary = screen_file(path, moderate, settings)
    except ProviderError as error:
        if error.retryable and not final_attempt:
            raise
        unavailable = Finding(
            line=None,
            code="moderation_unavailable",
            severity="warning",
            message=f"The provider's moderation endpoint failed: {error.message}",
            suggestion="Review a sample (GET /v1/files/{id}/sample) or re-upload to screen again.",
        )
        return apply_screening(
            report, [unavailable], {"screened": 0, "error": error.message}, settings
        )
    return apply_screening(report, findings, summary, settings)


def _account_for(session: Session, team_id: str) -> str:
    # Screening goes through the team's own provider credentials, like its jobs.
    return provider_for_team(session, team_id).account


def release(file_id: str) -> None:
    """Give a claimed validation back (its task will retry)."""
    with session_scope() as session:
        session.execute(
            sa.update(File)
            .where(File.id == file_id, File.validation_status == "running")  # type: ignore[arg-type]
            .values(validation_status="pending", validation_lease_expires_at=None)
        )


def _store(file_id: str, report: dict | None, *, error: str | None = None) -> None:
    with session_scope() as session:
        record = session.get(File, file_id, with_for_update=True)
        if record is None or record.validation_status != "running":
            return
        record.validation_lease_expires_at = None
        if report is None:
            record.validation_status = "error"
            record.report = {"error": error}
        else:
            record.validation_status = "completed"
            record.report = report
            record.verdict = report.get("verdict")
            record.format = report.get("format")
            record.examples = report.get("examples")
        session.add(record)
        # Jobs that were waiting for this report can move on.
        from service.jobs.models import FineTuningJob, JobStage

        waiting = session.exec(
            select(FineTuningJob.id).where(
                FineTuningJob.stage == JobStage.validating,
                sa.or_(
                    FineTuningJob.training_file_id == record.id,
                    FineTuningJob.validation_file_id == record.id,
                ),
            )
        ).all()
        for job_id in waiting:
            enqueue("jobs.submit", job_id)
        record_event(
            session,
            team_id=record.team_id,
            event_type="file.validated",
            object_id=record.id,
            sequence=record.validation_attempts,
            data=file_object(record),
        )


def reconcile() -> list[str]:
    """Re-enqueue validations whose message was lost or whose worker died."""
    now = utcnow()
    stale = now - dt.timedelta(seconds=get_settings().submit_stale_seconds)
    with session_scope() as session:
        file_ids = list(
            session.exec(
                select(File.id)
                .where(
                    File.validation_status.in_(["pending", "running"]),  # type: ignore[attr-defined]
                    File.created_at < stale,  # type: ignore[operator]
                    sa.or_(
                        File.validation_lease_expires_at.is_(None),  # type: ignore[union-attr]
                        File.validation_lease_expires_at < now,  # type: ignore[operator]
                    ),
                    File.deleted_at.is_(None),  # type: ignore[union-attr]
                )
                .limit(200)
            )
        )
        for file_id in file_ids:
            enqueue("files.validate", file_id)
    return file_ids
