"""model registry: lineage, shutdown alerts

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A re-trained job names the job it replays (lineage: GET /v1/models/{id} "parent").
    # Batch mode: SQLite (the embedded default) cannot add a foreign key in place.
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.add_column(sa.Column("parent_job_id", sa.String(40), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_parent_job", "fine_tuning_jobs", ["parent_job_id"], ["id"]
        )
        batch.create_index("ix_jobs_parent", ["parent_job_id"])
    op.create_table(
        "model_notices",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("fine_tuning_jobs.id"), nullable=False),
        sa.Column("notice", sa.String(64), nullable=False),
        sa.Column("shutdown_date", sa.Date, nullable=False),
        sa.Column("sent", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("team_id", "model", "notice", name="uq_model_notices_once"),
    )
    op.create_index("ix_model_notices_team_id", "model_notices", ["team_id"])


def downgrade() -> None:
    op.drop_index("ix_model_notices_team_id", table_name="model_notices")
    op.drop_table("model_notices")
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.drop_index("ix_jobs_parent")
        batch.drop_constraint("fk_jobs_parent_job", type_="foreignkey")
        batch.drop_column("parent_job_id")
