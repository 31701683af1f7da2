"""/dashboard: the pages. Thin: read through ``reads``, shape with ``charts``, render.

GETs need a session (else the sign-in page, 401); POSTs also need the CSRF token. Roles are
the API's: viewers read, members and admins cancel, admins replay deliveries.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import READ_ROLES, WRITE_ROLES
from api.dashboard import charts, reads
from api.dashboard.auth import (
    COOKIE,
    DashboardRoute,
    Viewer,
    clear_session_cookie,
    current_viewer,
    same_origin,
    set_session_cookie,
)
from api.dashboard.rendering import render
from service.dashboard import sessions
from service.db import session_scope
from service.errors import FtqError, InvalidRequest, NotFound, PermissionDenied, Unauthenticated
from service.jobs.models import TERMINAL_STATUSES, JobStatus
from service.tenants.models import Role
from service.tenants.service import record_auth_failure

router = APIRouter(prefix="/dashboard", route_class=DashboardRoute, include_in_schema=False)
SignedIn = Annotated[Viewer, Depends(current_viewer)]

JOB_STATUSES = [s.value for s in JobStatus]
LISTED_JOBS = 50
SCANNED_JOB_PAGES = 10


def _safe_next(target: str | None) -> str:
    # Only our own pages: never an absolute URL or a scheme-relative one (open redirect).
    if target and target.startswith("/dashboard/") and not target.startswith("//"):
        return target
    return "/dashboard/jobs"


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# Sign-in ----------------------------------------------------------------------------------
@router.get("")
def home() -> RedirectResponse:
    return _see_other("/dashboard/jobs")


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"message": None, "next": _safe_next(next)})


def _open(api_key: str) -> sessions.OpenedSession:
    try:
        with session_scope() as session:
            return sessions.open_session(session, api_key)
    except Unauthenticated as error:
        with session_scope() as session:
            record_auth_failure(session, api_key.strip(), error)
        raise


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    target = _safe_next(next)
    if not same_origin(request):
        raise PermissionDenied("Sign-in must come from this site's own page.")
    try:
        opened = await run_in_threadpool(_open, api_key)
    except (Unauthenticated, InvalidRequest) as error:
        status = 401 if isinstance(error, Unauthenticated) else 400
        return render(
            request, "login.html", {"message": error.message, "next": target}, status_code=status
        )
    response = _see_other(target)
    set_session_cookie(request, response, opened.token)
    return response


@router.post("/logout")
def logout(request: Request, viewer: SignedIn) -> Response:
    with session_scope() as session:
        sessions.close_session(session, request.cookies.get(COOKIE))
    response = _see_other("/dashboard/login")
    clear_session_cookie(response)
    return response


# Jobs -------------------------------------------------------------------------------------
def _matches(job: dict[str, Any], status: str | None, needle: str) -> bool:
    if status and job["status"] != status:
        return False
    if not needle:
        return True
    haystack = [
        job["id"],
        job["model"],
        job.get("fine_tuned_model") or "",
        job.get("training_file") or "",
        job.get("provider") or "",
        *[f"{k}={v}" for k, v in (job.get("metadata") or {}).items()],
    ]
    return any(needle in value.lower() for value in haystack)


@router.get("/jobs")
def jobs_page(
    request: Request,
    viewer: SignedIn,
    status: Annotated[str | None, Query(max_length=32)] = None,
    q: Annotated[str, Query(max_length=200)] = "",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    status = status or None
    if status and status not in JOB_STATUSES:
        raise InvalidRequest(f"Unknown status '{status}'.", param="status")
    needle = q.strip().lower()
    shown: list[dict[str, Any]] = []
    cursor, more = after, True
    # Filters run over pages of the API's own listing, newest first, until a screenful.
    for _ in range(SCANNED_JOB_PAGES):
        page, more = reads.jobs_page(viewer.principal, request, after=cursor)
        for job in page:
            cursor = job["id"]
            if _matches(job, status, needle):
                shown.append(job)
                if len(shown) == LISTED_JOBS:
                    break
        if len(shown) == LISTED_JOBS or not more:
            break
    # The evaluation verdict is on the job's gate (one small read per listed job).
    verdicts = {
        job["id"]: _verdict(reads.job_evaluation(viewer.principal, job["id"]))
        for job in shown
        if job["status"] == "succeeded"
    }
    older = None
    if more and cursor:
        older = f"/dashboard/jobs?after={quote(cursor)}&q={quote(q)}&status={quote(status or '')}"
    return render(
        request,
        "jobs.html",
        {
            "jobs": shown,
            "statuses": JOB_STATUSES,
            "status": status,
            "q": q,
            "older": older,
            "verdicts": {k: v for k, v in verdicts.items() if v},
        },
    )


def _verdict(gate: dict[str, Any]) -> str | None:
    if gate.get("status") == "not_requested":
        return None
    return str((gate.get("evaluation") or {}).get("verdict") or gate.get("status"))


def _job_state(principal: Any, job_id: str, known: str | None) -> dict[str, Any]:
    job = reads.job(principal, job_id)
    events, found = reads.events_since(principal, job_id, known)
    marks = charts.checkpoint_marks(reads.checkpoints(principal, job_id))
    return {
        "job": job,
        "terminal": job["status"] in TERMINAL_STATUSES,
        "reset": not found,  # the page's history is stale: replace it, do not append
        "points": charts.metric_points(events),
        "events": [charts.public_event(e) for e in events],
        "newest_event_id": events[-1]["id"] if events else known,
        "checkpoints": marks,
    }


@router.get("/jobs/{job_id}")
def job_page(
    request: Request,
    job_id: str,
    viewer: SignedIn,
    confirm: Annotated[str | None, Query(max_length=16)] = None,
    done: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    state = _job_state(viewer.principal, job_id, None)
    job = state["job"]
    return render(
        request,
        "job.html",
        {
            "job": job,
            "state": state,
            "confirm_cancel": confirm == "cancel" and viewer.can_write,
            "cancel_requested": done == "cancel",
            "can_cancel": viewer.can_write and not state["terminal"],
            "lineage": _lineage(job),
            "gate": reads.job_evaluation(viewer.principal, job_id),
        },
    )


def _lineage(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where the model came from: the fields a re-training elsewhere would need."""
    names = (
        "model",
        "training_file",
        "validation_file",
        "seed",
        "provider",
        "fine_tuned_model",
        "result_files",
        "trained_tokens",
    )
    rows = [(name, job.get(name)) for name in names if job.get(name) not in (None, [], "")]
    for name in ("lineage", "parent_job_id", "parent_model", "data_hashes", "registry"):
        if job.get(name):
            rows.append((name, job[name]))
    return rows


@router.get("/jobs/{job_id}/live.json")
def job_live(
    job_id: str,
    viewer: SignedIn,
    known: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    return JSONResponse(_job_state(viewer.principal, job_id, known or None))


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, viewer: SignedIn) -> Response:
    viewer.principal.require(*WRITE_ROLES)
    reads.cancel_job(viewer.principal, job_id)
    return _see_other(f"/dashboard/jobs/{quote(job_id)}?done=cancel")


@router.get("/jobs/{job_id}/evaluation")
def evaluation_page(request: Request, job_id: str, viewer: SignedIn) -> Response:
    job = reads.job(viewer.principal, job_id)
    gate = reads.job_evaluation(viewer.principal, job_id)
    evaluation = gate.get("evaluation") or {}
    return render(
        request,
        "evaluation.html",
        {
            "job": job,
            "gate": gate,
            "evaluation": evaluation,
            "view": _evaluation_view(viewer.principal, evaluation) if evaluation else {},
        },
    )


def _output_text(item: dict[str, Any] | None) -> str:
    sample = (item or {}).get("sample") or {}
    parts = [m.get("content") for m in sample.get("output") or [] if isinstance(m, dict)]
    return "\n".join(str(p) for p in parts if p)


def _evaluation_view(principal: Any, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The recorded evaluation laid out for the page: one row per model, the gate's
    difference with its interval, and each flipped example with both models' answers."""
    scores: dict[str, Any] = evaluation.get("scores") or {}
    criteria = sorted({name for s in scores.values() for name in (s.get("criteria") or {})})
    eval_id = evaluation.get("eval_id")
    answers: dict[str, dict[int, dict[str, Any]]] = {}
    for role in ("base", "fine_tuned"):
        run_id = (scores.get(role) or {}).get("run_id")
        if eval_id and run_id:
            items = reads.output_items(principal, eval_id, run_id)
            answers[role] = {i["datasource_item_id"]: i for i in items}
    flipped = evaluation.get("flipped") or {}
    pairs = []
    for direction, label in (
        ("base_passed_tuned_failed", "regression"),
        ("tuned_passed_base_failed", "improvement"),
    ):
        for example in flipped.get(direction) or []:
            index = example.get("datasource_item_id")
            base = answers.get("base", {}).get(index)
            tuned = answers.get("fine_tuned", {}).get(index)
            pairs.append(
                {
                    "kind": label,
                    "index": index,
                    "input": example.get("input"),
                    "ideal": example.get("ideal"),
                    "base": _output_text(base),
                    "base_status": (base or {}).get("status"),
                    "tuned": _output_text(tuned),
                    "tuned_status": (tuned or {}).get("status"),
                }
            )
    chart = {
        "criterion": evaluation.get("criterion"),
        "bars": [
            {"label": row.get("model") or role, "role": role, **(c or {})}
            for role, row in scores.items()
            for name, c in (row.get("criteria") or {}).items()
            if name == evaluation.get("criterion")
        ],
    }
    return {
        "criteria": criteria,
        "scores": scores,
        "interval": evaluation.get("confidence_interval") or {},
        "pairs": pairs,
        "counts": flipped.get("counts") or {},
        "chart": chart,
    }


@router.get("/evals")
def evals_page(request: Request, viewer: SignedIn) -> Response:
    return render(request, "evals.html", {"evals": reads.evals(viewer.principal)})


@router.get("/evals/{eval_id}")
def eval_page(request: Request, eval_id: str, viewer: SignedIn) -> Response:
    record = reads.eval_(viewer.principal, eval_id)
    runs = reads.eval_runs(viewer.principal, eval_id)
    criteria = sorted(
        {r["testing_criteria"] for run in runs for r in run.get("per_testing_criteria_results", [])}
    )
    return render(request, "eval.html", {"eval": record, "runs": runs, "criteria": criteria})


@router.get("/evals/{eval_id}/runs/{run_id}")
def eval_run_page(request: Request, eval_id: str, run_id: str, viewer: SignedIn) -> Response:
    run = reads.eval_run(viewer.principal, eval_id, run_id)
    items = reads.output_items(viewer.principal, eval_id, run_id, pages=3)
    rows = [
        {
            "id": i["id"],
            "index": i["datasource_item_id"],
            "status": i["status"],
            "item": i.get("datasource_item") or {},
            "output": _output_text(i),
            "results": i.get("results") or [],
        }
        for i in items
    ]
    return render(request, "eval_run.html", {"run": run, "items": rows})


# Files ------------------------------------------------------------------------------------
@router.get("/files")
def files_page(request: Request, viewer: SignedIn) -> Response:
    return render(request, "files.html", {"files": reads.files(viewer.principal)})


@router.get("/files/{file_id}")
def file_page(request: Request, file_id: str, viewer: SignedIn) -> Response:
    record = reads.file(viewer.principal, file_id)
    validation = reads.validation(viewer.principal, file_id)
    report = dict(validation.get("report") or {})
    severity_order = {"error": 0, "warning": 1, "info": 2}
    report["findings"] = sorted(
        report.get("findings") or [],
        key=lambda f: (severity_order.get(f.get("severity"), 3), f.get("line") or 0),
    )
    try:
        sample = reads.sample(viewer.principal, file_id)
    except FtqError:
        sample = []  # e.g. a result file that is not JSONL: the report page still shows
    return render(
        request,
        "file.html",
        {"file": record, "validation": validation, "report": report, "sample": sample},
    )


# Models, webhooks, usage ------------------------------------------------------------------
@router.get("/models")
def models_page(request: Request, viewer: SignedIn) -> Response:
    return render(request, "models.html", {"models": reads.models(viewer.principal)})


@router.get("/webhooks")
def webhooks_page(request: Request, viewer: SignedIn) -> Response:
    return render(request, "webhooks.html", {"endpoints": reads.endpoints(viewer.principal)})


@router.get("/webhooks/{endpoint_id}")
def endpoint_page(
    request: Request,
    endpoint_id: str,
    viewer: SignedIn,
    replayed: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    endpoint = reads.endpoint(viewer.principal, endpoint_id)
    deliveries = reads.deliveries(viewer.principal, endpoint_id)
    attempts = {
        d["id"]: reads.attempts(viewer.principal, endpoint_id, d["id"]) for d in deliveries[:20]
    }
    return render(
        request,
        "endpoint.html",
        {
            "endpoint": endpoint,
            "deliveries": deliveries,
            "attempts": attempts,
            "replayed": replayed,
        },
    )


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay")
def replay(endpoint_id: str, delivery_id: str, viewer: SignedIn) -> Response:
    viewer.principal.require(Role.admin)
    copy = reads.replay_delivery(viewer.principal, endpoint_id, delivery_id)
    return _see_other(f"/dashboard/webhooks/{quote(endpoint_id)}?replayed={quote(copy['id'])}")


@router.get("/usage")
def usage_page(
    request: Request,
    viewer: SignedIn,
    month: Annotated[str | None, Query(max_length=7)] = None,
) -> Response:
    viewer.principal.require(*READ_ROLES)
    return render(
        request,
        "usage.html",
        {
            "usage": reads.usage(viewer.principal, month or None),
            "budget": reads.budget(viewer.principal),
        },
    )


@router.get("/{rest:path}")
def unknown_page(rest: str, viewer: SignedIn) -> Response:
    raise NotFound(f"There is no dashboard page at /dashboard/{rest}.", code="unknown_url")
