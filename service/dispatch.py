"""Enqueueing work without importing Celery tasks.

Services name a task (``"jobs.submit"``) and its id arguments; the process that owns the
broker connection (API or worker) installs the publisher at start-up. Messages are sent
only after the unit of work commits, and carry ids only: the task re-reads the row, so a
lost or duplicated message costs a delay, never a job (the reconciler re-enqueues).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from service.db import after_commit

log = structlog.get_logger(__name__)

Publisher = Callable[[str, tuple[Any, ...], dict[str, Any]], None]
_publisher: Publisher | None = None


def install_publisher(publisher: Publisher | None) -> None:
    global _publisher
    _publisher = publisher


def publish_now(task_name: str, *args: Any, **options: Any) -> None:
    if _publisher is None:
        log.warning("no_task_publisher", task=task_name)
        return
    _publisher(task_name, args, options)


def enqueue(task_name: str, *args: Any, **options: Any) -> None:
    """Send ``task_name(*args)`` once the current transaction has committed."""
    after_commit(lambda: publish_now(task_name, *args, **options))
