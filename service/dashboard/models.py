"""A browser's dashboard session, bound to the API key it was opened with."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Field, SQLModel

from service.db import utcnow


class DashboardSession(SQLModel, table=True):
    __tablename__ = "dashboard_sessions"

    # SHA-256 of the cookie's random token: a leaked table opens no session.
    token_hash: str = Field(primary_key=True, max_length=64)
    key_id: str = Field(foreign_key="api_keys.id", index=True, max_length=32)
    team_id: str = Field(foreign_key="teams.id", max_length=32)
    # Sent back with every form and fetch that changes something (double-submit check).
    csrf_token: str = Field(max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)
    expires_at: dt.datetime = Field(index=True)
