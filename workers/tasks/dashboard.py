"""Thin dashboard tasks: expired sign-in sessions that were never presented again."""

from __future__ import annotations

from service.dashboard.sessions import purge_expired
from service.db import session_scope
from workers.app import app


@app.task(name="dashboard.purge_sessions", expires=600)
def purge_sessions() -> int:
    with session_scope() as session:
        return purge_expired(session)
