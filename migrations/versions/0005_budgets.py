"""budgets: team monthly budgets and each job's estimated cost

Revision ID: 0005_budgets
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005_budgets"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "team_budgets",
        sa.Column("team_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("monthly_budget_usd", sa.Float(), nullable=True),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
        sa.PrimaryKeyConstraint("team_id"),
    )
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.add_column(sa.Column("estimated_cost_usd", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.drop_column("estimated_cost_usd")
    op.drop_table("team_budgets")
