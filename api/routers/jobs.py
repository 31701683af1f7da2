"""/v1/fine_tuning/jobs: OpenAI's fine-tuning jobs API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.auth import Reader, Writer
from api.openapi import errors
from api.pagination import ListObject, page
from service.db import session_scope
from service.jobs import capacity, estimates
from service.jobs import service as jobs
from service.jobs.schemas import CreateJobInput
from service.jobs.serializers import checkpoint_object, event_object, job_object
from service.jobs.wire import (
    FineTuningJobCheckpointObject,
    FineTuningJobEventObject,
    FineTuningJobObject,
    JobEstimateObject,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def _metadata_filter(request: Request) -> dict[str, str]:
    # The SDK sends metadata={"k": "v"} as metadata[k]=v query parameters.
    return {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }


@router.post("", response_model=FineTuningJobObject, responses=errors(402))
def create_job(body: CreateJobInput, request: Request, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        job = jobs.create_job(
            session, principal.team_id, body, request_id=request.headers.get("x-request-id")
        )
        return job_object(job)


@router.post("/estimate", response_model=JobEstimateObject)
def estimate_job(body: CreateJobInput, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return estimates.estimate(session, principal.team_id, body)


@router.get("", response_model=ListObject[FineTuningJobObject])
def list_jobs(
    request: Request,
    principal: Reader,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = jobs.list_jobs(
            session, principal.team_id, after=after, limit=limit, metadata=_metadata_filter(request)
        )
        positions = capacity.queue_positions(session, rows)
        return page([job_object(j, queue_position=positions.get(j.id)) for j in rows], has_more)


@router.get("/{job_id}", response_model=FineTuningJobObject)
def retrieve_job(job_id: str, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        job = jobs.get_job(session, principal.team_id, job_id)
        positions = capacity.queue_positions(session, [job])
        return job_object(job, queue_position=positions.get(job.id))


@router.post("/{job_id}/cancel", response_model=FineTuningJobObject)
def cancel_job(job_id: str, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        return job_object(jobs.request_cancel(session, principal.team_id, job_id))


@router.post("/{job_id}/pause", response_model=FineTuningJobObject, responses=errors(502))
def pause_job(job_id: str, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        return job_object(jobs.pause_job(session, principal.team_id, job_id))


@router.post("/{job_id}/resume", response_model=FineTuningJobObject, responses=errors(502))
def resume_job(job_id: str, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        return job_object(jobs.resume_job(session, principal.team_id, job_id))


@router.get("/{job_id}/events", response_model=ListObject[FineTuningJobEventObject])
def list_events(
    job_id: str,
    principal: Reader,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = jobs.list_events(
            session, principal.team_id, job_id, after=after, limit=limit
        )
        return page([event_object(e) for e in rows], has_more)


@router.get("/{job_id}/checkpoints", response_model=ListObject[FineTuningJobCheckpointObject])
def list_checkpoints(
    job_id: str,
    principal: Reader,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, has_more = jobs.list_checkpoints(
            session, principal.team_id, job_id, after=after, limit=limit
        )
        return page([checkpoint_object(c) for c in rows], has_more)
