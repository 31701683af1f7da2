"""Thin job tasks: take ids, call the service, translate 'retry later' into a Celery retry."""

from __future__ import annotations

import socket

from celery import Task

from service.jobs import results, submission, tracking
from workers.app import app


@app.task(name="jobs.submit", bind=True, max_retries=None)
def submit_job(self: Task, job_id: str) -> None:
    try:
        submission.submit(job_id, owner=f"submit:{self.request.id}")
    except submission.RetryLater as later:
        # If this retry message is lost too, the reconciler re-enqueues the job.
        raise self.retry(countdown=later.seconds) from later


@app.task(name="jobs.poll")
def poll_job(job_id: str, owner: str) -> None:
    tracking.poll(job_id, owner)


@app.task(name="jobs.sweep", expires=30)
def sweep_jobs() -> int:
    return len(tracking.sweep(owner_prefix=f"poll:{socket.gethostname()}"))


@app.task(name="jobs.reconcile", expires=60)
def reconcile_jobs() -> int:
    return len(tracking.reconcile())


@app.task(name="jobs.admit", expires=30)
def admit_jobs() -> int:
    return len(tracking.admit())


@app.task(name="jobs.import_results", autoretry_for=(Exception,), max_retries=5, retry_backoff=True)
def import_results(job_id: str) -> None:
    results.import_result_files(job_id)
