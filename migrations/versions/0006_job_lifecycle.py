"""job lifecycle: state machine columns, upload intents, result import bookkeeping

Revision ID: 0006
Revises: 0005_budgets
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

from service.dbtypes import JSONType

revision: str = "0006"
down_revision: str | None = "0005_budgets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("fine_tuning_jobs", sa.Column("evaluation_config", JSONType, nullable=True))
    op.add_column("fine_tuning_jobs", sa.Column("evaluation", JSONType, nullable=True))
    # Uploads are announced before they start; the upstream id arrives when they finish.
    with op.batch_alter_table("provider_files") as batch:
        batch.alter_column("upstream_file_id", existing_type=sa.String(128), nullable=True)
    # Result files still to be copied into ftq (a reconciler finishes what a lost task left).
    op.add_column(
        "fine_tuning_jobs",
        sa.Column("results_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("fine_tuning_jobs", "results_pending")
    op.execute("DELETE FROM provider_files WHERE upstream_file_id IS NULL")
    with op.batch_alter_table("provider_files") as batch:
        batch.alter_column("upstream_file_id", existing_type=sa.String(128), nullable=False)
    op.drop_column("fine_tuning_jobs", "evaluation")
    op.drop_column("fine_tuning_jobs", "evaluation_config")
