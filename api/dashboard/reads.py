"""What the dashboard shows, read through the public API's own route functions.

The rule: the dashboard never queries a table the /v1 routes do not answer from. Calling the
route functions with the session's principal gives the same team scoping (another team's id
is a ``NotFound``), the same objects and the same field names as the API, so the pages show
exactly what ``curl`` or the SDK would.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api.routers import evals as evals_api
from api.routers import files as files_api
from api.routers import jobs as jobs_api
from api.routers import models as models_api
from api.routers import usage as usage_api
from api.routers import webhooks as webhooks_api
from service.tenants.service import Principal

PAGE = 100  # the /v1 routes' own maximum page size
MAX_EVENT_PAGES = 50  # 5,000 events: a very long job's curve, without reading forever


def job(principal: Principal, job_id: str) -> dict[str, Any]:
    return jobs_api.retrieve_job(job_id, principal)


def jobs_page(
    principal: Principal, request: Request, *, after: str | None
) -> tuple[list[dict[str, Any]], bool]:
    listing = jobs_api.list_jobs(request, principal, after=after, limit=PAGE)
    return listing["data"], listing["has_more"]


def events_since(
    principal: Principal, job_id: str, known: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """Events newer than ``known`` in time order, and whether ``known`` was found.

    Events page newest first; a poll reads pages until it meets the newest event it already
    has, so a running job costs one page per poll however long its history.
    """
    newer: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(MAX_EVENT_PAGES):
        listing = jobs_api.list_events(job_id, principal, after=after, limit=PAGE)
        for event in listing["data"]:
            if known is not None and event["id"] == known:
                return list(reversed(newer)), True
            newer.append(event)
        if not listing["has_more"] or not listing["data"]:
            break
        after = listing["data"][-1]["id"]
    return list(reversed(newer)), known is None


def checkpoints(principal: Principal, job_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        listing = jobs_api.list_checkpoints(job_id, principal, after=after, limit=PAGE)
        found.extend(listing["data"])
        if not listing["has_more"] or not listing["data"]:
            return sorted(found, key=lambda c: c["step_number"])
        after = listing["data"][-1]["id"]


def file(principal: Principal, file_id: str) -> dict[str, Any]:
    return files_api.retrieve_file(file_id, principal)


def files(principal: Principal) -> list[dict[str, Any]]:
    return files_api.list_files(principal, limit=200)["data"]


def validation(principal: Principal, file_id: str) -> dict[str, Any]:
    return files_api.file_validation(file_id, principal)


def sample(principal: Principal, file_id: str, n: int = 5) -> list[dict[str, Any]]:
    return files_api.sample_file(file_id, principal, n=n, seed=0)["data"]


def models(principal: Principal) -> list[dict[str, Any]]:
    return models_api.list_models(principal)["data"]


def endpoints(principal: Principal) -> list[dict[str, Any]]:
    return webhooks_api.list_endpoints(principal, limit=100)["data"]


def endpoint(principal: Principal, endpoint_id: str) -> dict[str, Any]:
    return webhooks_api.retrieve_endpoint(endpoint_id, principal)


def deliveries(principal: Principal, endpoint_id: str) -> list[dict[str, Any]]:
    return webhooks_api.list_deliveries(endpoint_id, principal, limit=50)["data"]


def attempts(principal: Principal, endpoint_id: str, delivery_id: str) -> list[dict[str, Any]]:
    return webhooks_api.list_attempts(endpoint_id, delivery_id, principal, limit=20)["data"]


def usage(principal: Principal, month: str | None) -> dict[str, Any]:
    return usage_api.usage(principal, month)


def budget(principal: Principal) -> dict[str, Any]:
    return usage_api.get_budget(principal)


def job_evaluation(principal: Principal, job_id: str) -> dict[str, Any]:
    """The job's evaluation gate: its runs while they work, then the recorded evaluation."""
    return evals_api.job_evaluation(job_id, principal)


def evals(principal: Principal) -> list[dict[str, Any]]:
    return evals_api.list_evals(principal, limit=100, order="desc")["data"]


def eval_(principal: Principal, eval_id: str) -> dict[str, Any]:
    return evals_api.retrieve_eval(eval_id, principal)


def eval_runs(principal: Principal, eval_id: str) -> list[dict[str, Any]]:
    return evals_api.list_runs(eval_id, principal, limit=100, order="desc")["data"]


def eval_run(principal: Principal, eval_id: str, run_id: str) -> dict[str, Any]:
    return evals_api.retrieve_run(eval_id, run_id, principal)


def output_items(
    principal: Principal, eval_id: str, run_id: str, *, pages: int = 10
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(pages):
        listing = evals_api.list_output_items(
            eval_id, run_id, principal, after=after, limit=PAGE, order="asc"
        )
        found.extend(listing["data"])
        if not listing["has_more"] or not listing["data"]:
            break
        after = listing["data"][-1]["id"]
    return found


# Mutations: the same route functions, after the dashboard checked role and CSRF.
def cancel_job(principal: Principal, job_id: str) -> dict[str, Any]:
    return jobs_api.cancel_job(job_id, principal)


def replay_delivery(principal: Principal, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
    return webhooks_api.replay_delivery(endpoint_id, delivery_id, principal)
