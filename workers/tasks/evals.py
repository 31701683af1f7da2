"""Thin eval tasks on the ``evals`` queue: runs, the fine-tuning gate, their reconcilers."""

from __future__ import annotations

from celery import Task

from service.evals import gate, runner
from workers.app import app


@app.task(name="evals.run", bind=True, max_retries=None)
def run_eval(self: Task, run_id: str) -> None:
    try:
        runner.execute(run_id, owner=f"run:{self.request.id}")
    except runner.RetryLater as later:
        # A lost retry message costs a delay only: the reconciler re-enqueues the run.
        raise self.retry(countdown=max(0.5, later.seconds)) from later


@app.task(name="evals.gate")
def gate_job(job_id: str) -> str:
    return gate.run_gate(job_id, owner="gate")


@app.task(name="evals.reconcile", expires=60)
def reconcile_evals() -> int:
    return len(runner.reconcile()) + len(gate.reconcile())
