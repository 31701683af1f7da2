"""/v1/files: OpenAI's Files API, plus the validation report."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Reader, Writer
from api.pagination import ListObject, page
from api.uploads import read_upload
from service.db import session_scope
from service.files import derived, reports
from service.files import service as files
from service.files.storage import get_storage
from service.files.wire import (
    FileDeletedObject,
    FileObject,
    FileSampleList,
    FileSplitObject,
    FileValidationObject,
)
from service.jobs import service as jobs

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", response_model=FileObject)
async def upload_file(request: Request, principal: Writer) -> dict[str, Any]:
    parsed = await read_upload(request, get_storage())
    assert parsed.staged is not None

    def store() -> dict[str, Any]:
        with session_scope() as session:
            record = files.create_file(
                session,
                principal.team_id,
                parsed.filename or "upload.jsonl",
                parsed.fields.get("purpose", ""),
                parsed.staged,  # type: ignore[arg-type]
            )
            return files.file_object(record)

    return await run_in_threadpool(store)


@router.get("", response_model=ListObject[FileObject])
def list_files(
    principal: Reader,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = files.list_files(
            session, principal.team_id, purpose=purpose, limit=limit, after=after, order=order
        )
        return page([files.file_object(r) for r in rows], has_more)


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return files.file_object(files.get_file(session, principal.team_id, file_id))


@router.delete("/{file_id}", response_model=FileDeletedObject)
def delete_file(file_id: str, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        files.get_file(session, principal.team_id, file_id)  # another team's id: 404 first
        jobs.refuse_delete_in_use(session, principal.team_id, file_id)
        record = files.delete_file(session, principal.team_id, file_id)
        return {"id": record.id, "object": "file", "deleted": True}


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The bytes."}},
)
def file_content(file_id: str, principal: Reader) -> FileResponse:
    with session_scope() as session:
        record = files.get_file(session, principal.team_id, file_id)
    return FileResponse(
        files.file_path(record), media_type="application/octet-stream", filename=record.filename
    )


@router.get("/{file_id}/validation", response_model=FileValidationObject)
def file_validation(
    file_id: str,
    principal: Reader,
    model: Annotated[str | None, Query(max_length=256)] = None,
    method: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """The stored report; with ``model`` (and ``method``) the report for that job instead."""
    with session_scope() as session:
        record = files.get_file(session, principal.team_id, file_id)
        if model is None and method is None:
            return {
                "object": "file.validation",
                "file_id": record.id,
                "status": record.validation_status,
                "verdict": record.verdict,
                "report": record.report,
            }
        return reports.validation_for_model(session, principal.team_id, record, model, method)


class SplitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=2**63 - 1)


class ConvertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system_prompt: str | None = Field(None, max_length=100_000)


@router.post("/{file_id}/split", response_model=FileSplitObject)
def split_file(file_id: str, principal: Writer, body: SplitRequest | None = None) -> dict[str, Any]:
    body = body or SplitRequest()
    with session_scope() as session:
        train, valid = derived.split(
            session,
            principal.team_id,
            file_id,
            validation_fraction=body.validation_fraction,
            seed=body.seed,
        )
        return {
            "object": "file.split",
            "source_file": file_id,
            "validation_fraction": body.validation_fraction,
            "seed": body.seed,
            "training_file": files.file_object(train),
            "validation_file": files.file_object(valid),
        }


@router.post("/{file_id}/convert", response_model=FileObject)
def convert_file(
    file_id: str, principal: Writer, body: ConvertRequest | None = None
) -> dict[str, Any]:
    body = body or ConvertRequest()
    with session_scope() as session:
        converted = derived.convert_to_chat(
            session, principal.team_id, file_id, system_prompt=body.system_prompt
        )
        return files.file_object(converted)


@router.get("/{file_id}/sample", response_model=FileSampleList)
def sample_file(
    file_id: str,
    principal: Reader,
    n: Annotated[int, Query(ge=1, le=1000)] = 20,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> dict[str, Any]:
    with session_scope() as session:
        data = derived.sample(session, principal.team_id, file_id, n=n, seed=seed)
    return {"object": "list", "data": data, "has_more": False, "n": n, "seed": seed}
