"""/v1/fine_tuning/alpha/graders: run one grader on one sample, or check a definition."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body
from starlette.concurrency import run_in_threadpool

from api.auth import Reader, Writer
from service.db import session_scope
from service.errors import InvalidRequest, RateLimited
from service.evals import graders
from service.evals.calls import ModelCalls, RateLimitedLater
from service.evals.service import check_model
from service.evals.wire import GraderRunResponse, GraderValidateResponse
from service.jobs.inference import api_error_from_provider
from service.providers.base import ProviderError

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])

JsonBody = Annotated[dict[str, Any], Body()]


def _checked(team_id: str, spec: Any) -> dict[str, Any]:
    with session_scope() as session:
        return graders.validate(
            spec,
            "grader",
            in_eval=False,
            check_model=lambda model, param: check_model(session, team_id, model, param),
        )


@router.post("/validate", response_model=GraderValidateResponse)
def validate_grader(body: JsonBody, principal: Reader) -> dict[str, Any]:
    return {"grader": _checked(principal.team_id, body.get("grader"))}


@router.post("/run", response_model=GraderRunResponse)
async def run_grader(body: JsonBody, principal: Writer) -> dict[str, Any]:
    spec = await run_in_threadpool(_checked, principal.team_id, body.get("grader"))
    sample = body.get("model_sample")
    if not isinstance(sample, str):
        raise InvalidRequest("model_sample must be the model's output text.", param="model_sample")
    item = body.get("item") or {}
    if not isinstance(item, dict):
        raise InvalidRequest("item must be an object.", param="item")

    def grade() -> dict[str, Any]:
        started = time.monotonic()
        namespace: dict[str, Any] = {"output_text": sample, "output_json": None, "choices": []}
        try:
            result = graders.grade(spec, item, namespace, ModelCalls(principal.team_id))
        except RateLimitedLater as limited:
            raise RateLimited(
                "The judge model's provider is rate limiting; retry later.",
                headers={"Retry-After": str(max(1, int(limited.seconds)))},
            ) from limited
        except ProviderError as error:
            raise api_error_from_provider(error) from error
        return graders.run_response(spec, result, started)

    return await run_in_threadpool(grade)
