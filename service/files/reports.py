"""The pre-flight report of an uploaded file, produced by a worker right after upload, and
that report as it applies to another model and method (``GET …/validation?model=``).

Rule: the stored report is written once per upload, by the worker that claimed it; a view for
another model never changes it. A provider's moderation answer that cannot be read is a
warning in the report at once, never a retry of the same answer.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlmodel import Session, col, select

from service import broker
from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.errors import InvalidRequest
from service.files.models import File
from service.files.service import file_object, file_path
from service.files.validation.report import Finding, Report, add_findings
from service.files.validation.retarget import retarget
from service.files.validation.screening import (
    MalformedModeration,
    apply_screening,
    screen_file,
)
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
                    col(File.validation_lease_expires_at) < now,
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
        try:
            return provider.moderate(batch, model)
        except ProviderError:
            raise
        except Exception as exc:
            # The SDK parses leniently; what it cannot turn into results (a missing results
            # list, wrong types) surfaces here. An answer that did not parse once won't on a
            # retry either, so it is recorded now instead of holding the file for a lease.
            raise MalformedModeration(f"the answer could not be read ({exc})") from exc

    try:
        findings, summary = screen_file(path, moderate, settings)
    except ProviderError as error:
        if error.retryable and not final_attempt:
            raise
        return _unscreened(report, settings, f"failed: {error.message}")
    except MalformedModeration as malformed:
        log.warning("moderation_malformed", error=str(malformed))
        return _unscreened(report, settings, f"answered malformed results: {malformed}")
    return apply_screening(report, findings, summary, settings)


def _unscreened(report: Report, settings: ValidationSettings, what: str) -> Report:
    """The report with one warning that moderation could not screen the file."""
    unavailable = Finding(
        line=None,
        code="moderation_unavailable",
        severity="warning",
        message=f"The provider's moderation endpoint {what}",
        suggestion="Review a sample (GET /v1/files/{id}/sample) or re-upload to screen again.",
    )
    return apply_screening(report, [unavailable], {"screened": 0, "error": what}, settings)


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
                    col(FineTuningJob.training_file_id) == record.id,
                    col(FineTuningJob.validation_file_id) == record.id,
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
    """Re-enqueue validations whose message was lost or whose worker died.

    As the job reconciler: while the validations' queue holds messages, a pending file is
    in a backlog, not lost, and copies added behind it every tick would only grow it."""
    now = utcnow()
    stale = now - dt.timedelta(seconds=get_settings().submit_stale_seconds)
    if broker.queue_length(broker.queue_for("files.validate")):
        return []
    with session_scope() as session:
        file_ids = list(
            session.exec(
                select(File.id)
                .where(
                    File.validation_status.in_(["pending", "running"]),  # type: ignore[attr-defined]
                    File.created_at < stale,  # type: ignore[operator]
                    sa.or_(
                        File.validation_lease_expires_at.is_(None),  # type: ignore[union-attr]
                        col(File.validation_lease_expires_at) < now,
                    ),
                    File.deleted_at.is_(None),  # type: ignore[union-attr]
                )
                .limit(200)
            )
        )
        for file_id in file_ids:
            enqueue("files.validate", file_id)
    return file_ids


# -- the stored report, seen for another model and method ---------------------------------

# Re-counting tokens happens inside the request; past this size the stored counts are
# re-targeted instead (exact context, price and fit; tokens from the other encoding, noted).
RECOUNT_MAX_BYTES = 32 * 1024 * 1024


METHOD_TYPES = ("supervised", "dpo", "reinforcement", "full", "freeze", "lora")


def validation_for_model(
    session: Session, team_id: str, record: File, model: str | None, method: str | None
) -> dict[str, Any]:
    """``GET /v1/files/{id}/validation?model=…&method=…``: the report for that job."""
    settings = get_settings()
    model = model or settings.validation.default_model
    local = model in settings.local.allowed_base_models
    if not (local or model in settings.fine_tunable_models or _owns(session, team_id, model)):
        raise InvalidRequest(
            f"Model '{model}' is not available for fine-tuning.",
            param="model",
            code="model_not_available",
        )
    if method is not None and method not in METHOD_TYPES:
        raise InvalidRequest(
            f"Invalid method '{method}': expected one of {', '.join(METHOD_TYPES)}.",
            param="method",
            code="invalid_value",
        )
    answer: dict[str, Any] = {
        "object": "file.validation",
        "file_id": record.id,
        "status": record.validation_status,
        "model": model,
        "method": method,
        "verdict": None,
        "report": None,
    }
    if record.validation_status != "completed" or not record.report:
        return answer  # nothing to re-target yet: the status says why
    report = report_for_model(record, model, method, local=local)
    document = report.model_dump(mode="json")
    document["path"] = record.filename
    return {**answer, "verdict": report.verdict, "report": document}


def _owns(session: Session, team_id: str, model: str) -> bool:
    """Continued training: a team may name its own fine-tuned models."""
    from service.jobs.models import FineTuningJob

    if not model.startswith("ft:"):
        return False
    query = select(FineTuningJob.id).where(
        col(FineTuningJob.team_id) == team_id, col(FineTuningJob.fine_tuned_model) == model
    )
    return session.exec(query).first() is not None


def report_for_model(
    record: File, model: str, method_type: str | None = None, *, local: bool = False
) -> Report:
    """The pre-flight report of a validated file as it applies to ``model`` and ``method_type``:
    its context limit, price, encoding (re-counted when it differs and the file is small
    enough), local special tokens, and whether the format fits (service/files/compat.py).
    The stored report is not changed; moderation results are carried over, not re-screened."""
    from service.files.compat import fit_findings
    from service.files.validation.special_tokens import configured_special_tokens
    from service.files.validation.tokens import encoding_for_model

    settings = get_settings().validation
    stored = Report.model_validate(record.report)
    special = configured_special_tokens(model) if local else ()
    if stored.model == model and not special:
        base = stored
    elif (
        encoding_for_model(model) != stored.tokens.encoding or special
    ) and record.bytes <= RECOUNT_MAX_BYTES:
        base = _recount(record, stored, model, settings, special)
    else:
        base = retarget(stored, model, settings)
    extra = fit_findings(base.format, model, method_type, local=local)
    return add_findings(base, extra) if extra else base


def _recount(
    record: File,
    stored: Report,
    model: str,
    settings: ValidationSettings,
    special_tokens: tuple[str, ...],
) -> Report:
    try:
        report = validate_file(
            file_path(record),
            model=model,
            settings=settings,
            workers=1,
            special_tokens=special_tokens,
        )
    except Exception:  # a validator bug must not turn a read into a 500
        log.exception("revalidation_failed", file_id=record.id, model=model)
        return retarget(stored, model, settings)
    screened = [f for f in stored.findings if f.code.startswith("moderation_")]
    if stored.moderation is not None:
        report = apply_screening(report, screened, stored.moderation, settings)
    return report
