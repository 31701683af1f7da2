"""/v1/evals: OpenAI's Evals API (evals, runs, output items), plus ftq's eval templates."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query

from api.auth import Reader, Writer
from api.pagination import page
from service.db import session_scope
from service.evals import service as evals
from service.evals import templates
from service.evals.wire import (
    EvalDeleted,
    EvalObject,
    EvalRunDeleted,
    EvalRunObject,
    EvalTemplate,
    JobEvaluationGate,
    OutputItemObject,
)
from service.pagination import ListObject

router = APIRouter(prefix="/v1/evals", tags=["evals"])

JsonBody = Annotated[dict[str, Any], Body()]
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]


def _listing(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        **page(data, has_more),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.post("", response_model=EvalObject)
def create_eval(body: JsonBody, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        return evals.eval_object(evals.create_eval(session, principal.team_id, body))


@router.get("", response_model=ListObject[EvalObject])
def list_evals(
    principal: Reader, after: str | None = None, limit: Limit = 20, order: Order = "asc"
) -> dict[str, Any]:
    with session_scope() as session:
        rows, more = evals.list_evals(
            session, principal.team_id, after=after, limit=limit, order=order
        )
        return _listing([evals.eval_object(r) for r in rows], more)


@router.get("/templates", response_model=ListObject[EvalTemplate])
def list_templates(principal: Reader) -> dict[str, Any]:
    """ftq extension: the ready-made evals ``POST /v1/evals/templates`` fills in."""
    return page([templates.describe(name) for name in templates.TEMPLATES], False)


@router.post("/templates", response_model=EvalObject)
def create_from_template(body: JsonBody, principal: Writer) -> dict[str, Any]:
    """ftq extension: an eval for a usual application, filled in from a dataset file in
    one call: ``{"template": "classification", "file_id": ..., "fields"?: {...}}``."""
    with session_scope() as session:
        built = templates.build(session, principal.team_id, body.get("template"), body)
        record = evals.create_eval(
            session, principal.team_id, built["body"], template=built["template"]
        )
        return evals.eval_object(record)


@router.get("/{eval_id}", response_model=EvalObject)
def retrieve_eval(eval_id: str, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return evals.eval_object(evals.get_eval(session, principal.team_id, eval_id))


@router.post("/{eval_id}", response_model=EvalObject)
def update_eval(eval_id: str, body: JsonBody, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        return evals.eval_object(evals.update_eval(session, principal.team_id, eval_id, body))


@router.delete("/{eval_id}", response_model=EvalDeleted)
def delete_eval(eval_id: str, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        record = evals.delete_eval(session, principal.team_id, eval_id)
        return {"object": "eval.deleted", "deleted": True, "eval_id": record.id}


@router.post("/{eval_id}/runs", response_model=EvalRunObject)
def create_run(eval_id: str, body: JsonBody, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        run = evals.create_run(session, principal.team_id, eval_id, body)
        return evals.run_object(session, run)


@router.get("/{eval_id}/runs", response_model=ListObject[EvalRunObject])
def list_runs(
    eval_id: str,
    principal: Reader,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: str | None = None,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, more = evals.list_runs(
            session,
            principal.team_id,
            eval_id,
            after=after,
            limit=limit,
            order=order,
            status=status,
        )
        return _listing([evals.run_object(session, r) for r in rows], more)


@router.get("/{eval_id}/runs/{run_id}", response_model=EvalRunObject)
def retrieve_run(eval_id: str, run_id: str, principal: Reader) -> dict[str, Any]:
    with session_scope() as session:
        return evals.run_object(session, evals.get_run(session, principal.team_id, eval_id, run_id))


def _cancel(eval_id: str, run_id: str, team_id: str) -> dict[str, Any]:
    with session_scope() as session:
        return evals.run_object(session, evals.cancel_run(session, team_id, eval_id, run_id))


@router.post("/{eval_id}/runs/{run_id}", response_model=EvalRunObject)
def cancel_run(eval_id: str, run_id: str, principal: Writer) -> dict[str, Any]:
    """OpenAI's spec cancels with a POST on the run itself."""
    return _cancel(eval_id, run_id, principal.team_id)


@router.post("/{eval_id}/runs/{run_id}/cancel", response_model=EvalRunObject)
def cancel_run_sdk(eval_id: str, run_id: str, principal: Writer) -> dict[str, Any]:
    """The SDK's ``runs.cancel`` posts here."""
    return _cancel(eval_id, run_id, principal.team_id)


@router.delete("/{eval_id}/runs/{run_id}", response_model=EvalRunDeleted)
def delete_run(eval_id: str, run_id: str, principal: Writer) -> dict[str, Any]:
    with session_scope() as session:
        run = evals.delete_run(session, principal.team_id, eval_id, run_id)
        return {"object": "eval.run.deleted", "deleted": True, "run_id": run.id}


@router.get("/{eval_id}/runs/{run_id}/output_items", response_model=ListObject[OutputItemObject])
def list_output_items(
    eval_id: str,
    run_id: str,
    principal: Reader,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: str | None = None,
) -> dict[str, Any]:
    with session_scope() as session:
        rows, more = evals.list_output_items(
            session,
            principal.team_id,
            eval_id,
            run_id,
            after=after,
            limit=limit,
            order=order,
            status=status,
        )
        return _listing([evals.output_item_object(r) for r in rows], more)


@router.get(
    "/{eval_id}/runs/{run_id}/output_items/{output_item_id}", response_model=OutputItemObject
)
def retrieve_output_item(
    eval_id: str, run_id: str, output_item_id: str, principal: Reader
) -> dict[str, Any]:
    with session_scope() as session:
        return evals.output_item_object(
            evals.get_output_item(session, principal.team_id, eval_id, run_id, output_item_id)
        )


jobs_router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["evals"])


@jobs_router.get("/{job_id}/evaluation", response_model=JobEvaluationGate)
def job_evaluation(job_id: str, principal: Reader) -> dict[str, Any]:
    """ftq extension: a fine-tuning job's evaluation gate — its runs while they work, then
    the recorded evaluation (scores, difference with its interval, flips, verdict)."""
    from service.evals.gate import gate_status

    with session_scope() as session:
        return gate_status(session, principal.team_id, job_id)
