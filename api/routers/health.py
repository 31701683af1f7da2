"""Liveness, readiness (database and broker) and Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.config import get_settings
from service.db import get_engine
from service.errors import PermissionDenied, Unauthenticated

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz", response_model=Liveness)
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


def _check_broker() -> None:
    settings = get_settings()
    url = settings.resolved_broker_url
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return
    # The filesystem transport: its folder must exist and be writable.
    folder = settings.broker_folder / "queue"
    probe = folder / ".readyz"
    probe.write_bytes(b"")
    probe.unlink()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The database or broker is down."}},
)
def readyz() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        _check_broker()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus scrape. Team ids are labels, so production serves it only to the holder
    of ``FTQ_METRICS_TOKEN``; the embedded default (dev) leaves it open unless one is set."""
    settings = get_settings()
    token = settings.metrics_token
    if token is None and settings.env == "production":
        raise PermissionDenied(
            "/metrics is disabled: in production it requires FTQ_METRICS_TOKEN; set it and "
            "scrape with 'Authorization: Bearer <token>'.",
            code="metrics_token_required",
        )
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        ):
            raise Unauthenticated("Send the metrics token as 'Authorization: Bearer <token>'.")
    body = await run_in_threadpool(metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
