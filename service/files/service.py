"""Files: create from a staged upload, read, list and delete — always within one team."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from service import ids
from service.db import after_commit, utcnow
from service.dispatch import enqueue
from service.errors import InvalidRequest, NotFound
from service.files import quota
from service.files.models import File
from service.files.storage import StagedUpload, get_storage
from service.files.wire import FileObject
from service.pagination import keyset_page
from service.tenants import audit

FINE_TUNE = "fine-tune"
FINE_TUNE_RESULTS = "fine-tune-results"
ACCEPTED_PURPOSES = ("fine-tune",)
ALL_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


def _check_upload(filename: str, purpose: str, staged: StagedUpload) -> None:
    if not purpose:
        raise InvalidRequest(
            "Missing required parameter: 'purpose' (send purpose=fine-tune with the file).",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose not in ALL_PURPOSES:
        raise InvalidRequest(
            f"'{purpose}' is not one of {list(ALL_PURPOSES)} - 'purpose'", param="purpose"
        )
    if purpose not in ACCEPTED_PURPOSES:
        raise InvalidRequest(
            f"ftq accepts files with purpose 'fine-tune' only, not '{purpose}'.", param="purpose"
        )
    if staged.size == 0:
        raise InvalidRequest("The uploaded file is empty.", param="file", code="empty_file")
    if not filename.lower().endswith(".jsonl"):
        raise InvalidRequest(
            f"Invalid file format for Fine-Tuning API. Must be .jsonl (got '{filename}').",
            param="file",
            code="invalid_file_format",
        )
    head = staged.head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"{"):
        raise InvalidRequest(
            "The file does not look like JSONL: its first line is not a JSON object.",
            param="file",
            code="invalid_file_format",
        )


def create_file(
    session: Session, team_id: str, filename: str, purpose: str, staged: StagedUpload
) -> File:
    """Store a staged upload as a new file; on any error the staged bytes are discarded."""
    storage = get_storage()
    try:
        _check_upload(filename, purpose, staged)
        quota.check_file_create(session, team_id, staged.size)
        file_id = ids.file_id()
        key = f"{team_id}/{file_id}.jsonl"
        storage.commit(staged, key)
    except BaseException:
        staged.discard()
        raise
    record = File(
        id=file_id,
        team_id=team_id,
        filename=Path(filename).name[:512],
        purpose=purpose,
        bytes=staged.size,
        sha256=staged.sha256,
        storage_key=key,
    )
    session.add(record)
    audit.record(
        session, None, "file.create", "file", file_id, {"bytes": staged.size}, team_id=team_id
    )
    # If the transaction fails the row never existed: remove the stored bytes too.
    session.info.setdefault("on_rollback", []).append(lambda: storage.delete(key))
    enqueue("files.validate", file_id)
    return record


def create_derived_file(
    session: Session, team_id: str, filename: str, write: Callable[[Path], object]
) -> File:
    """A new file produced by ftq (split, conversion): ``write`` fills a scratch path, whose
    bytes are then stored exactly like an upload (hashed, size-checked, validated)."""
    storage = get_storage()
    scratch = storage.root / ".staging" / f"derived-{ids.random_base62(12)}.jsonl"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(scratch)
        staged = storage.stage()
        with scratch.open("rb") as source:
            while chunk := source.read(1024 * 1024):
                staged.write(chunk)
    finally:
        scratch.unlink(missing_ok=True)
    return create_file(session, team_id, filename, FINE_TUNE, staged)


def store_result_file(session: Session, team_id: str, filename: str, data: bytes) -> File:
    """A job's result file (metrics CSV) copied from the provider, so it outlives it."""
    storage = get_storage()
    staged = storage.stage()
    try:
        staged.write(data)
        file_id = ids.file_id()
        key = f"{team_id}/{file_id}.result"
        storage.commit(staged, key)
    except BaseException:
        staged.discard()
        raise
    record = File(
        id=file_id,
        team_id=team_id,
        filename=filename,
        purpose=FINE_TUNE_RESULTS,
        bytes=len(data),
        sha256=staged.sha256,
        storage_key=key,
        validation_status="skipped",
    )
    session.add(record)
    session.info.setdefault("on_rollback", []).append(lambda: storage.delete(key))
    return record


def get_file(session: Session, team_id: str, file_id: str) -> File:
    record = session.exec(
        select(File).where(File.id == file_id, File.team_id == team_id, File.deleted_at.is_(None))  # type: ignore[union-attr]
    ).first()
    if record is None:
        raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
    return record


def list_files(
    session: Session,
    team_id: str,
    *,
    purpose: str | None = None,
    limit: int = 10000,
    after: str | None = None,
    order: str = "desc",
) -> tuple[list[File], bool]:
    scope = [col(File.team_id) == team_id, col(File.deleted_at).is_(None)]
    query = select(File).where(*scope)
    if purpose:
        query = query.where(col(File.purpose) == purpose)
    return keyset_page(
        session,
        query,
        after=after,
        limit=limit,
        id_column=col(File.id),
        order=(col(File.created_at), col(File.id)),
        scope=scope,
        descending=order != "asc",
    )


def delete_file(session: Session, team_id: str, file_id: str) -> File:
    record = get_file(session, team_id, file_id)
    record.deleted_at = utcnow()
    session.add(record)
    audit.record(session, None, "file.delete", "file", record.id, team_id=team_id)
    # Jobs keep referring to the row (soft delete); the bytes go once the delete commits.
    key = record.storage_key
    after_commit(lambda: get_storage().delete(key))
    return record


def file_path(record: File) -> Path:
    return get_storage().path_for(record.storage_key)


def file_wire(record: File) -> FileObject:
    """The OpenAI file object, plus ftq's validation summary as added fields."""
    return FileObject.model_validate(
        {
            "id": record.id,
            "bytes": record.bytes,
            "created_at": int(record.created_at.timestamp()),
            "filename": record.filename,
            "purpose": record.purpose,
            "status": record.status,
            "sha256": record.sha256,
            "validation": {
                "status": record.validation_status,
                "verdict": record.verdict,
                "format": record.format,
                "examples": record.examples,
            },
        }
    )


def file_object(record: File) -> dict[str, Any]:
    """``file_wire`` as JSON-ready data (webhook payloads)."""
    return file_wire(record).model_dump(mode="json")
