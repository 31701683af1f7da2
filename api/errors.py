"""Every error leaves the API in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import FtqError

log = structlog.get_logger(__name__)


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


_UNION_TAGS = {"int", "float", "str", "bool", "list", "dict", "none"}


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    # pydantic names the union member it tried ("constrained-int", "literal['auto']");
    # callers want the field path only.
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path", "header")
        and str(p) not in _UNION_TAGS
        and not any(c in str(p) for c in "-[]'(")
    ]
    return ".".join(parts) or None


async def _ftq_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FtqError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    param = _param_from_loc(tuple(first.get("loc", ())))
    message = first.get("msg", "Invalid request.")
    if param:
        message = f"{message} - '{param}'"
    if first.get("type") == "json_invalid":
        message, param = "We could not parse the JSON body of your request.", None
    return error_response(400, message, param=param, code="invalid_request")


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message, code = "Unknown request URL. Please check the URL and method.", "unknown_url"
    elif exc.status_code == 405:
        message, code = "Method not allowed for this URL.", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    return error_response(
        exc.status_code, message, code=code, headers=getattr(exc, "headers", None)
    )


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    # A deadlock victim, a serialization failure or an unreachable database: nothing was
    # committed, and the same request can simply be sent again.
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(exc, DataError):
        # A value the database cannot hold (a number past its column's range, text with
        # NUL): the caller's input, rolled back whole. Routes bound what they can; this
        # is the backstop for what slips through.
        log.info("database_refused_value", error=str(exc.orig)[:200], sqlstate=code)
        return error_response(
            400,
            "A value in this request cannot be stored: a number is out of range or a text "
            "contains NUL (\\u0000) characters. Nothing was changed.",
            code="invalid_value",
        )
    transient = code in ("40P01", "40001") or isinstance(exc, OperationalError)
    log.warning("database_error", error=str(exc).splitlines()[0], sqlstate=code)
    if not transient:
        return await _unexpected(_request, exc)
    return error_response(
        503,
        "The database could not complete this request right now; nothing was changed. "
        "Please retry.",
        type="server_error",
        code="database_unavailable",
        headers={"Retry-After": "1"},
    )


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", error=str(exc))
    return error_response(
        500,
        "The server had an error while processing your request.",
        type="server_error",
        code="internal_error",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FtqError, _ftq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
