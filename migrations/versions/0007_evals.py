"""evaluations: evals, runs, output items, job gate

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from service.dbtypes import JSONType

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sqlmodel.sql.sqltypes.UTCDateTime()


def upgrade() -> None:
    op.create_table(
        "evals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("data_source_config", JSONType, nullable=False),
        sa.Column("testing_criteria", JSONType, nullable=False),
        sa.Column("user_metadata", JSONType, nullable=True),
        sa.Column("template", JSONType, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("deleted_at", _TS, nullable=True),
    )
    op.create_index("ix_evals_team_created", "evals", ["team_id", "created_at"])
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("eval_id", sa.String(40), sa.ForeignKey("evals.id"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("model", sa.String(512), nullable=True),
        sa.Column("data_source", JSONType, nullable=False),
        sa.Column("items", JSONType, nullable=False),
        sa.Column("user_metadata", JSONType, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("total_items", sa.Integer, nullable=False),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("usage", JSONType, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("metrics", JSONType, nullable=True),
        sa.Column("gate_job_id", sa.String(40), nullable=True),
        sa.Column("gate_role", sa.String(512), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("deleted_at", _TS, nullable=True),
        sa.Column("not_before", _TS, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    op.create_index("ix_eval_runs_eval_created", "eval_runs", ["eval_id", "created_at"])
    op.create_index("ix_eval_runs_status", "eval_runs", ["status", "lease_expires_at"])
    op.create_index("ix_eval_runs_gate_job_id", "eval_runs", ["gate_job_id"])
    op.create_table(
        "eval_output_items",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("eval_runs.id"), nullable=False),
        sa.Column("eval_id", sa.String(40), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("datasource_item_id", sa.Integer, nullable=False),
        sa.Column("datasource_item", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("results", JSONType, nullable=False),
        sa.Column("sample", JSONType, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("run_id", "datasource_item_id", name="uq_eval_items_run_index"),
    )
    op.create_index("ix_eval_output_items_team_id", "eval_output_items", ["team_id"])
    op.create_table(
        "eval_gates",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("eval_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("runs", JSONType, nullable=False),
        sa.Column("holdout", JSONType, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", _TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("eval_gates")
    op.drop_index("ix_eval_output_items_team_id", "eval_output_items")
    op.drop_table("eval_output_items")
    op.drop_index("ix_eval_runs_gate_job_id", "eval_runs")
    op.drop_index("ix_eval_runs_status", "eval_runs")
    op.drop_index("ix_eval_runs_eval_created", "eval_runs")
    op.drop_table("eval_runs")
    op.drop_index("ix_evals_team_created", "evals")
    op.drop_table("evals")
