"""Thin file tasks."""

from __future__ import annotations

from service.files import reports
from workers.app import app


@app.task(name="files.validate", time_limit=1800, soft_time_limit=1750)
def validate_file(file_id: str) -> None:
    reports.validate(file_id)


@app.task(name="files.reconcile", expires=60)
def reconcile_files() -> int:
    return len(reports.reconcile())
