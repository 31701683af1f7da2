"""Thin tasks for the local provider.

``training.run`` is routed to the ``training`` queue, served by GPU workers started with
``-Q training --concurrency 1`` (one run per device). Lost runs are re-enqueued by
``jobs.reconcile`` (every runner's), on the ordinary queue, never behind a days-long run.
"""

from __future__ import annotations

from celery import Task

from service.config import get_settings
from service.jobs.runners import local as local_jobs
from workers.app import app

_limit = get_settings().local.task_time_limit_seconds


@app.task(
    name="training.run",
    bind=True,
    # A run lasts hours: Celery's default limits (minutes) would kill it. The lease, not the
    # time limit, is what detects a dead worker.
    time_limit=_limit,
    soft_time_limit=_limit - 30,
)
def run_training(self: Task, job_id: str) -> None:
    local_jobs.run(job_id, owner=f"train:{self.request.id}")
