"""Thin job tasks: take ids, call the service, translate 'retry later' into a Celery retry."""

from __future__ import annotations

import socket

from celery import Task

from service.jobs import admission, results, submission, tracking
from service.jobs.runners import all_runners
from workers.app import app


@app.task(name="jobs.submit", bind=True, max_retries=None)
def submit_job(self: Task, job_id: str) -> None:
    try:
        admission.submit(job_id, owner=f"submit:{self.request.id}")
    except submission.RetryLater as later:
        # If this retry message is lost too, the reconciler re-enqueues the job.
        raise self.retry(countdown=later.seconds) from later


@app.task(name="jobs.poll")
def poll_job(job_id: str, owner: str, status_known: bool = False, checkpoints: bool = True) -> None:
    tracking.poll(job_id, owner, status_known=status_known, checkpoints=checkpoints)


@app.task(name="jobs.poll_now")
def poll_job_now(job_id: str) -> None:
    """A change the provider must hear about at once (a cancel): poll outside the sweep."""
    tracking.poll_now(job_id)


@app.task(name="jobs.sweep", expires=30)
def sweep_jobs() -> int:
    return len(tracking.sweep(owner_prefix=f"poll:{socket.gethostname()}"))


@app.task(name="jobs.reconcile", expires=60)
def reconcile_jobs() -> int:
    """Every runner's lost work: submissions, result imports, training runs."""
    return sum(len(runner.reconcile()) for runner in all_runners())


@app.task(name="jobs.admit", expires=30)
def admit_jobs() -> int:
    return len(tracking.admit())


@app.task(name="jobs.import_results", autoretry_for=(Exception,), max_retries=5, retry_backoff=True)
def import_results(job_id: str) -> None:
    results.import_result_files(job_id)
