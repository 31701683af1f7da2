"""The pre-flight report of an uploaded file, produced by a worker right after upload."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
import structlog
from sqlmodel import select

from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.files.models import File
from service.files.service import file_object, file_path
from service.webhooks.outbox import record_event

log = structlog.get_logger(__name__)

MAX_VALIDATION_ATTEMPTS = 5


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


def validate(file_id: str) -> None:
    """Validate one file and store its report; idempotent (a finished file is left alone)."""
    if not _claim(file_id):
        return
    with session_scope() as session:
        record = session.get(File, file_id)
        assert record is not None
        path, attempts = file_path(record), record.validation_attempts
    if attempts > MAX_VALIDATION_ATTEMPTS:
        _store(file_id, None, error="validation crashed repeatedly")
        return
    from service.files.validation.validator import validate_file

    try:
        report = validate_file(path)
    except Exception as exc:  # a validator bug must not leave the file pending forever
        log.exception("validation_failed", file_id=file_id)
        _store(file_id, None, error=f"validator error: {exc}")
        return
    _store(file_id, report.model_dump(mode="json"))


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
