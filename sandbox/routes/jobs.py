"""Fine-tuning jobs (/v1/fine_tuning/jobs)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Query, Request

from sandbox.errors import APIError
from sandbox.pagination import list_body
from sandbox.routes.common import check_limit, organization, read_json, runtime
from sandbox.validation import validate_job_request

router = APIRouter(prefix="/fine_tuning/jobs")

_METADATA_PARAM = re.compile(r"^metadata\[(.+)\]$")


def _metadata_filter(request: Request) -> tuple[dict[str, str], bool]:
    """``metadata[k]=v`` pairs to match, and whether ``metadata=null`` was asked for."""
    wanted: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        match = _METADATA_PARAM.match(key)
        if match:
            wanted[match.group(1)] = value
    return wanted, request.query_params.get("metadata") == "null"


@router.post("")
async def create_job(request: Request) -> dict[str, Any]:
    rt = runtime(request)
    config = rt.config
    if config.refuse_new_jobs:
        raise APIError(
            403,
            "New fine-tuning jobs can no longer be created: self-serve fine-tuning stopped "
            "accepting jobs on 2027-01-06. Existing fine-tuned models stay available for "
            "inference until their base model shuts down.",
            code="fine_tuning_unavailable",
        )
    job_request = validate_job_request(await read_json(request))
    job = rt.store.create_job(job_request, organization(request))
    if config.hold_create_seconds > 0:
        # The job is already committed; holding the response open lets tests kill a
        # client between "upstream created it" and "client learned its id".
        await asyncio.sleep(config.hold_create_seconds)
        # The answer says what the job is when it is sent, as a real API's would: a job
        # that finished while the response was held answers with its terminal status.
        return rt.store.get_job(job["id"])
    return job


@router.get("")
async def list_jobs(
    request: Request, after: str | None = None, limit: int | None = Query(None)
) -> dict[str, Any]:
    metadata, null_metadata = _metadata_filter(request)
    data, has_more = runtime(request).store.list_jobs(
        after=after,
        limit=check_limit(limit, 20, 100),
        metadata=metadata,
        null_metadata=null_metadata,
    )
    return list_body(data, has_more)


@router.get("/{fine_tuning_job_id}")
async def retrieve_job(request: Request, fine_tuning_job_id: str) -> dict[str, Any]:
    return runtime(request).store.get_job(fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/cancel")
async def cancel_job(request: Request, fine_tuning_job_id: str) -> dict[str, Any]:
    return runtime(request).store.cancel_job(fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/pause")
async def pause_job(request: Request, fine_tuning_job_id: str) -> dict[str, Any]:
    return runtime(request).store.pause_job(fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/resume")
async def resume_job(request: Request, fine_tuning_job_id: str) -> dict[str, Any]:
    return runtime(request).store.resume_job(fine_tuning_job_id)


@router.get("/{fine_tuning_job_id}/events")
async def list_events(
    request: Request,
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: int | None = Query(None),
) -> dict[str, Any]:
    data, has_more = runtime(request).store.list_events(
        fine_tuning_job_id, after=after, limit=check_limit(limit, 20, 1000)
    )
    return list_body(data, has_more)


@router.get("/{fine_tuning_job_id}/checkpoints")
async def list_checkpoints(
    request: Request,
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: int | None = Query(None),
) -> dict[str, Any]:
    data, has_more = runtime(request).store.list_checkpoints(
        fine_tuning_job_id, after=after, limit=check_limit(limit, 10, 100)
    )
    return list_body(
        data,
        has_more,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
    )
