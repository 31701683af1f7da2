"""Dashboard sign-in state and the rules every dashboard request obeys.

- The session cookie is HttpOnly, SameSite=Strict, scoped to /dashboard, Secure on https.
- Every POST must carry the session's CSRF token (form field or ``X-CSRF-Token``) and, when
  the browser sends one, an ``Origin`` equal to ours; sign-in checks the Origin only.
- Errors never leave as JSON or a stack trace: a page with the status (sign-in page for 401),
  except under ``…/live`` and other JSON routes, which answer in OpenAI's error shape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import ratelimit
from api.dashboard.rendering import render
from service.dashboard import sessions
from service.db import session_scope
from service.errors import FtqError, PermissionDenied, Unauthenticated
from service.tenants import audit
from service.tenants.models import Role
from service.tenants.service import Principal

log = structlog.get_logger(__name__)

COOKIE = "ftq_dashboard"
COOKIE_PATH = "/dashboard"
SECURITY_HEADERS = {
    # No inline script or style: pages pass data in JSON blocks read by /dashboard/static JS.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class Viewer:
    """The signed-in team member behind a dashboard request."""

    principal: Principal
    csrf_token: str
    expires_at: dt.datetime

    @property
    def can_write(self) -> bool:
        return self.principal.role in (Role.admin, Role.member)

    @property
    def is_admin(self) -> bool:
        return self.principal.role == Role.admin


class CsrfRejected(PermissionDenied):
    default_code = "csrf_failed"


def _resolve(token: str | None) -> Viewer:
    with session_scope() as session:
        try:
            resolved = sessions.resolve_session(session, token)
        except Unauthenticated:
            session.commit()  # the expired or orphaned row is gone either way
            raise
        ratelimit.enforce(session, resolved.principal)
        return Viewer(resolved.principal, resolved.csrf_token, resolved.expires_at)


async def current_viewer(request: Request) -> Viewer:
    viewer = await run_in_threadpool(_resolve, request.cookies.get(COOKIE))
    principal = viewer.principal
    structlog.contextvars.bind_contextvars(team_id=principal.team_id, key_id=principal.key_id)
    audit.set_actor(principal)
    # The access log audits a 404 to a signed-in caller, as it does for /v1.
    request.state.principal = principal
    request.state.viewer = viewer
    if request.method == "POST":
        await _check_csrf(request, viewer)
    return viewer


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Browsers send Origin on every cross-site POST; its absence means same-site or
        # a non-browser client, which the SameSite=Strict cookie already rules out.
        return origin is None
    return origin.rstrip("/") == str(request.base_url).rstrip("/")


async def _check_csrf(request: Request, viewer: Viewer) -> None:
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        given = value if isinstance(value, str) else None
    if not same_origin(request) or not sessions.csrf_matches(viewer.csrf_token, given):
        raise CsrfRejected(
            "This form is out of date or came from another site; reload the page and retry."
        )


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=sessions.DASHBOARD_SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def _wants_json(request: Request) -> bool:
    return request.url.path.endswith(".json") or "application/json" in request.headers.get(
        "accept", ""
    )


def error_page(request: Request, error: FtqError) -> Response:
    if _wants_json(request):
        return JSONResponse(error.to_body(), status_code=error.status_code)
    if isinstance(error, Unauthenticated):
        response = render(
            request,
            "login.html",
            {"message": error.message, "next": _next_target(request)},
            status_code=401,
        )
        clear_session_cookie(response)
        return response
    titles = {403: "Not allowed", 404: "Not found", 429: "Slow down"}
    return render(
        request,
        "error.html",
        {
            "title": titles.get(error.status_code, "That did not work"),
            "status": error.status_code,
            "message": error.message,
        },
        status_code=error.status_code,
    )


def _next_target(request: Request) -> str:
    if request.method == "GET" and request.url.path.startswith("/dashboard/"):
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/dashboard/jobs"


class DashboardRoute(APIRoute):
    """Answers every failure of a dashboard route as a page, with security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except FtqError as error:
                response = error_page(request, error)
            except RequestValidationError as error:
                first: dict[str, Any] = dict(error.errors()[0]) if error.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
                response = error_page(
                    request, FtqError(f"Bad value for '{where}': {first.get('msg', 'invalid')}.")
                )
            except StarletteHTTPException as error:
                response = error_page(request, _http_error(error.status_code, str(error.detail)))
            except Exception:
                log.exception("dashboard_error")
                response = render(
                    request,
                    "error.html",
                    {
                        "title": "Something went wrong",
                        "status": 500,
                        "message": "ftq could not show this page; the error is in its log.",
                    },
                    status_code=500,
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded


def _http_error(status: int, detail: str) -> FtqError:
    error = FtqError(detail)
    error.status_code = status
    return error
