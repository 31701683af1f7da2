"""The Celery app: configuration, beat schedule, and the glue to ftq's services.

Messages are wake-ups that carry ids; Postgres holds the state. Hence late acks, requeue
on a lost worker, prefetch 1, and a hard time limit well below the visibility timeout so a
healthy task is never redelivered while it still runs (reliability.md B1).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery, signals

import service.models  # noqa: F401  (every table registered before the first query)
from service.broker import base_config
from service.config import get_settings
from service.db import dispose_engines
from service.dispatch import install_publisher
from service.logging import configure_logging

settings = get_settings()

# The shortest life of a periodic wake-up: a worker's clock a little behind beat's must not
# find every message already expired.
MIN_WAKE_UP_LIFE_SECONDS = 2.0


def every(task: str, seconds: float) -> dict[str, Any]:
    """A beat entry whose message expires when the next one is due.

    Periodic tasks are wake-ups that re-read Postgres, so a late copy is worth nothing once
    a fresh one is queued. Without expiry, a worker that was down, or slower than beat,
    meets a backlog of identical sweeps in front of the real work (polls, submissions,
    deliveries), and the backlog grows for as long as it stays behind.
    """
    life = max(seconds, MIN_WAKE_UP_LIFE_SECONDS)
    return {"task": task, "schedule": seconds, "options": {"expires": life}}


app = Celery("ftq")
app.conf.update(
    base_config(settings),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    task_time_limit=settings.task_time_limit_seconds,
    task_soft_time_limit=max(1, settings.task_time_limit_seconds - 30),
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    beat_schedule={
        "dashboard.purge_sessions": every("dashboard.purge_sessions", 3600.0),
        "jobs.sweep": every("jobs.sweep", settings.sweep_interval_seconds),
        "jobs.admit": every("jobs.admit", settings.sweep_interval_seconds),
        # Every runner's lost work (submissions, result imports, local training runs).
        "jobs.reconcile": every("jobs.reconcile", settings.reconcile_interval_seconds),
        "files.reconcile": every("files.reconcile", settings.reconcile_interval_seconds),
        # Webhooks: outbox rows to deliveries, and due deliveries (retries, lost messages).
        "webhooks.fanout": every("webhooks.fanout", settings.sweep_interval_seconds),
        "webhooks.sweep": every("webhooks.sweep", settings.sweep_interval_seconds),
        # Evals: runs whose lease lapsed or message was lost; gates that stopped progressing.
        "evals.reconcile": every("evals.reconcile", settings.reconcile_interval_seconds),
        # Model registry: shutdown_approaching / retired notices, each sent once.
        "registry.shutdown_alerts": every(
            "registry.shutdown_alerts", settings.registry.alert_interval_seconds
        ),
    },
    beat_schedule_filename=str((settings.data_dir / "celerybeat-schedule").resolve()),
    include=[
        "workers.tasks.jobs",
        "workers.tasks.files",
        "workers.tasks.webhooks",
        "workers.tasks.training",
        "workers.tasks.evals",
        "workers.tasks.registry",
        "workers.tasks.dashboard",
    ],
)


def _publish(task_name: str, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    app.send_task(task_name, args=list(args), **options)


# Inside workers, follow-up tasks go through this app's own connection pool.
install_publisher(_publish)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(settings, process="worker")


@signals.worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked child must not reuse the parent's database connections.
    dispose_engines()


@signals.before_task_publish.connect
def _carry_context(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    context = structlog.contextvars.get_contextvars()
    for key in ("request_id", "team_id", "job_id"):
        if key in context:
            headers[f"ftq_{key}"] = context[key]


@signals.task_prerun.connect
def _bind_context(task: Any = None, task_id: str | None = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    request = getattr(task, "request", None)
    bound: dict[str, Any] = {"task": getattr(task, "name", None), "task_id": task_id}
    for key in ("request_id", "team_id", "job_id"):
        value = getattr(request, f"ftq_{key}", None) if request is not None else None
        if value is None and request is not None:
            value = (getattr(request, "headers", None) or {}).get(f"ftq_{key}")
        if value is not None:
            bound[key] = value
    structlog.contextvars.bind_contextvars(**bound)
