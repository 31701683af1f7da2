"""Authentication and role checks as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request

from service.db import session_scope
from service.tenants.models import Role
from service.tenants.service import Principal, authenticate

READ_ROLES = (Role.admin, Role.member, Role.viewer)
WRITE_ROLES = (Role.admin, Role.member)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def current_principal(request: Request) -> Principal:
    with session_scope() as session:
        principal = authenticate(session, _bearer(request))
    structlog.contextvars.bind_contextvars(team_id=principal.team_id, key_id=principal.key_id)
    request.state.principal = principal
    return principal


def require(*roles: Role) -> Callable[[Principal], Principal]:
    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        principal.require(*roles)
        return principal

    return check


Reader = Annotated[Principal, Depends(require(*READ_ROLES))]
Writer = Annotated[Principal, Depends(require(*WRITE_ROLES))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
