"""Authentication and role checks as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api import ratelimit
from service.db import session_scope
from service.errors import PermissionDenied, Unauthenticated
from service.tenants import audit
from service.tenants.models import Role
from service.tenants.service import Principal, authenticate, record_auth_failure

# Operator keys are deliberately absent: they manage teams, not a team's objects.
READ_ROLES = (Role.admin, Role.member, Role.viewer)
WRITE_ROLES = (Role.admin, Role.member)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _authenticate(request: Request, token: str | None) -> Principal:
    # The middleware's pre-check may already have counted this request (api/ratelimit.py).
    checked = ratelimit.checked(request.scope)
    try:
        with session_scope() as session:
            principal = authenticate(session, token)
            ratelimit.enforce(session, principal, checked)
            return principal
    except Unauthenticated as exc:
        if ratelimit.authentication_failed(request.scope, exc):
            # Its own transaction: the refused request's work (if any) was rolled back.
            with session_scope() as session:
                record_auth_failure(session, token, exc)
        raise


async def current_principal(request: Request) -> Principal:
    # Async so the context variables set here reach the endpoint (sync dependencies run in
    # a copied context whose changes are lost); the database work runs in the threadpool.
    principal = await run_in_threadpool(_authenticate, request, _bearer(request))
    structlog.contextvars.bind_contextvars(team_id=principal.team_id, key_id=principal.key_id)
    audit.set_actor(principal)
    request.state.principal = principal
    return principal


def _record_denied(principal: Principal, request: Request) -> None:
    with session_scope() as session:
        audit.record(
            session,
            principal,
            "access.denied",
            "route",
            f"{request.method} {request.url.path}",
            {"role": principal.role.value},
        )


def require(*roles: Role) -> Callable[..., Any]:
    async def check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        try:
            principal.require(*roles)
        except PermissionDenied:
            await run_in_threadpool(_record_denied, principal, request)
            raise
        return principal

    return check


Reader = Annotated[Principal, Depends(require(*READ_ROLES))]
Writer = Annotated[Principal, Depends(require(*WRITE_ROLES))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
