"""Alembic migrations; the same revisions run on Postgres and SQLite."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    # "heads": revisions written in parallel on independent tables may branch; every branch
    # is applied (a merge revision can join them later without changing the schema).
    command.upgrade(alembic_config(database_url), revision)
