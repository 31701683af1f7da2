"""Thin file tasks."""

from __future__ import annotations

from celery import Task

from service.files import reports
from service.providers.base import ProviderError
from workers.app import app


@app.task(name="files.validate", bind=True, max_retries=3, time_limit=1800, soft_time_limit=1750)
def validate_file(self: Task, file_id: str) -> None:
    try:
        reports.validate(file_id, final_attempt=self.request.retries >= self.max_retries)
    except ProviderError as error:
        # Moderation was unreachable: give the claim back and try again shortly.
        reports.release(file_id)
        raise self.retry(countdown=5 * (self.request.retries + 1)) from error


@app.task(name="files.reconcile", expires=60)
def reconcile_files() -> int:
    return len(reports.reconcile())
