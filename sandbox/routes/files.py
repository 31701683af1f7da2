"""Files (/v1/files) and Uploads (/v1/uploads)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import FormData, UploadFile

from sandbox.errors import bad_request
from sandbox.pagination import list_body
from sandbox.routes.common import check_limit, read_json, runtime
from sandbox.state import FILE_PURPOSES, UPLOAD_PURPOSES
from sandbox.validation import (
    invalid_type,
    invalid_value,
    is_int,
    missing,
    require_object,
    require_str,
)

router = APIRouter()

_MIN_EXPIRY = 3600
_MAX_EXPIRY = 2_592_000


async def _form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("This endpoint expects a multipart/form-data body.")
    return await request.form()


def _check_purpose(purpose: Any, allowed: tuple[str, ...]) -> str:
    if purpose is None:
        raise missing("purpose")
    if purpose not in allowed:
        listed = ", ".join(f"'{p}'" for p in allowed)
        raise invalid_value("purpose", f"'{purpose}' is not one of {listed}.")
    return str(purpose)


def _check_fine_tune_name(filename: str, purpose: str) -> None:
    if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
        raise bad_request(
            f"Invalid file format for Fine-Tuning API. Must be .jsonl (got '{filename}').",
            param="file",
            code="invalid_file_format",
        )


def _expiry_seconds(anchor: Any, seconds: Any, param: str = "expires_after") -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise invalid_value(f"{param}.anchor", "the only supported anchor is 'created_at'.")
    try:
        value = int(seconds)
    except (TypeError, ValueError):
        raise invalid_type(f"{param}.seconds", "an integer", seconds) from None
    if not _MIN_EXPIRY <= value <= _MAX_EXPIRY:
        raise invalid_value(
            f"{param}.seconds", f"expected between {_MIN_EXPIRY} and {_MAX_EXPIRY} seconds."
        )
    return value


@router.post("/files")
async def create_file(request: Request) -> dict[str, Any]:
    form = await _form(request)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise missing("file")
    purpose = _check_purpose(form.get("purpose"), FILE_PURPOSES)
    filename = upload.filename or "upload"
    _check_fine_tune_name(filename, purpose)
    expiry = _expiry_seconds(form.get("expires_after[anchor]"), form.get("expires_after[seconds]"))
    content = await upload.read()
    return runtime(request).store.add_file(content, filename, purpose, expiry)


@router.get("/files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int | None = Query(None),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    data, has_more = runtime(request).store.list_files(
        purpose=purpose, order=order, after=after, limit=check_limit(limit, 10_000, 10_000)
    )
    return list_body(
        data,
        has_more,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
    )


@router.get("/files/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    return runtime(request).store.get_file(file_id)


@router.delete("/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    return runtime(request).store.delete_file(file_id)


@router.get("/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    content, filename = runtime(request).store.file_content(file_id)
    media_type = "text/csv" if filename.endswith(".csv") else "application/octet-stream"
    return Response(content, media_type=media_type)


# --- uploads ---------------------------------------------------------------------------------


@router.post("/uploads")
async def create_upload(request: Request) -> dict[str, Any]:
    body = require_object(await read_json(request))
    filename = require_str(body, "filename")
    purpose = _check_purpose(body.get("purpose"), UPLOAD_PURPOSES)
    if body.get("bytes") is None:
        raise missing("bytes")
    size = body["bytes"]
    if not is_int(size) or size < 0:
        raise invalid_value("bytes", "expected a non-negative integer.")
    mime_type = require_str(body, "mime_type")
    _check_fine_tune_name(filename, purpose)
    expires_after = body.get("expires_after")
    expiry = None
    if expires_after is not None:
        if not isinstance(expires_after, dict):
            raise invalid_type("expires_after", "an object", expires_after)
        expiry = _expiry_seconds(expires_after.get("anchor"), expires_after.get("seconds"))
    return runtime(request).store.create_upload(
        filename=filename,
        purpose=purpose,
        size=size,
        mime_type=mime_type,
        file_expires_after=expiry,
    )


@router.post("/uploads/{upload_id}/parts")
async def add_upload_part(request: Request, upload_id: str) -> dict[str, Any]:
    form = await _form(request)
    data = form.get("data")
    if not isinstance(data, UploadFile):
        raise missing("data")
    return runtime(request).store.add_upload_part(upload_id, await data.read())


@router.post("/uploads/{upload_id}/complete")
async def complete_upload(request: Request, upload_id: str) -> dict[str, Any]:
    body = require_object(await read_json(request))
    part_ids = body.get("part_ids")
    if part_ids is None:
        raise missing("part_ids")
    if not isinstance(part_ids, list) or not all(isinstance(p, str) for p in part_ids):
        raise invalid_type("part_ids", "an array of strings", part_ids)
    md5 = body.get("md5")
    if md5 is not None and not isinstance(md5, str):
        raise invalid_type("md5", "a string", md5)
    return runtime(request).store.complete_upload(upload_id, part_ids, md5)


@router.post("/uploads/{upload_id}/cancel")
async def cancel_upload(request: Request, upload_id: str) -> dict[str, Any]:
    return runtime(request).store.cancel_upload(upload_id)
