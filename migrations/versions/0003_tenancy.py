"""tenancy: audit events, team limits, key addresses, provider credentials

Revision ID: 0003
Revises: 0003_jobs
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0003_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def _str(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", _str(40), nullable=False),
        sa.Column("team_id", _str(32), nullable=True),
        sa.Column("actor_key_id", _str(32), nullable=True),
        sa.Column("action", _str(64), nullable=False),
        sa.Column("target_type", _str(32), nullable=False),
        sa.Column("target_id", _str(128), nullable=True),
        sa.Column("request_id", _str(64), nullable=True),
        sa.Column("ip", _str(64), nullable=True),
        sa.Column("details", _JSON, nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_team_id"), ["team_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_events_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "team_limits",
        sa.Column("team_id", _str(32), nullable=False),
        sa.Column("max_active_jobs", sa.Integer(), nullable=True),
        sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True),
        sa.Column("max_files", sa.Integer(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
        sa.PrimaryKeyConstraint("team_id"),
    )

    op.create_table(
        "api_key_addresses",
        sa.Column("key_id", _str(32), nullable=False),
        sa.Column("ip", _str(64), nullable=False),
        sa.Column("first_seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("key_id", "ip"),
    )

    op.create_table(
        "provider_credentials",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", _str(40), nullable=False),
        sa.Column("team_id", _str(32), nullable=False),
        sa.Column("kind", _str(16), nullable=False),
        sa.Column("account", _str(40), nullable=False),
        sa.Column("config", _JSON, nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=False),
        sa.Column("key_hint", _str(16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("retired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("provider_credentials", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provider_credentials_team_id"), ["team_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_provider_credentials_account"), ["account"], unique=False
        )


def downgrade() -> None:
    op.drop_table("provider_credentials")
    op.drop_table("api_key_addresses")
    op.drop_table("team_limits")
    op.drop_table("audit_events")
