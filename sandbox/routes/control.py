"""Control and observability endpoints under /sandbox (no auth, never faulted)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from sandbox.errors import bad_request
from sandbox.routes.common import read_json, runtime
from sandbox.validation import require_object

router = APIRouter(prefix="/sandbox")


@router.get("/config")
async def get_config(request: Request) -> dict[str, Any]:
    return runtime(request).config.model_dump()


@router.put("/config")
async def update_config(request: Request) -> dict[str, Any]:
    patch = require_object(await read_json(request))
    try:
        config = runtime(request).update_config(patch)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise bad_request(f"Invalid value for '{param}': {first['msg']}.", param=param) from None
    return config.model_dump()


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    rt = runtime(request)
    rt.reset()
    return {"reset": True, "config": rt.config.model_dump()}


@router.get("/requests")
async def list_requests(
    request: Request, method: str | None = None, path: str | None = None
) -> dict[str, Any]:
    return {"object": "list", "data": runtime(request).requests.query(method, path)}


@router.delete("/requests")
async def clear_requests(request: Request) -> dict[str, Any]:
    runtime(request).requests.clear()
    return {"cleared": True}


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    rt = runtime(request)
    return {
        "requests": rt.requests.counts(),
        "requests_total": rt.requests.totals(),
        **rt.store.stats(),
    }


@router.get("/timeline")
async def timeline(request: Request) -> dict[str, Any]:
    """Per ftq job: first create time and upstream status changes (for benchmarks)."""
    return runtime(request).store.timeline()
