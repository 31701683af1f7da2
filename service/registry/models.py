"""What the registry has told a team about a model, so each notice goes out once.

One row per (team, model, notice): ``shutdown_approaching:30``, ``…:7``, ``…:1`` and
``retired``. The unique constraint is the once-only guarantee: the beat task inserts the row
and the outbox event in one transaction, so a restart (or two beats) cannot send it twice.
A ``retired`` row also makes calls to the model answer ``model_retired``.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import utcnow


class ModelNotice(SQLModel, table=True):
    __tablename__ = "model_notices"
    __table_args__ = (
        sa.UniqueConstraint("team_id", "model", "notice", name="uq_model_notices_once"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=32)
    model: str = Field(max_length=512)
    job_id: str = Field(foreign_key="fine_tuning_jobs.id", max_length=40)
    notice: str = Field(max_length=64)
    shutdown_date: dt.date
    # False for a threshold passed over (e.g. the 30-day one when the model was first seen
    # 5 days before its shutdown): recorded so it is never sent late.
    sent: bool = True
    created_at: dt.datetime = Field(default_factory=utcnow)
