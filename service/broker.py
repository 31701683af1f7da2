"""Broker connection settings, shared by the worker app and by publishers (API, CLI).

The broker carries only wake-ups (task names with ids), so any process can publish by name
without importing the task code.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery

from service.config import Settings, get_settings


def transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"visibility_timeout": settings.broker_visibility_timeout_seconds}
    if settings.resolved_broker_url.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        options.update(
            data_folder_in=str(folder / "queue"),
            data_folder_out=str(folder / "queue"),
            processed_folder=str(folder / "processed"),
            control_folder=str(folder / "control"),  # else kombu writes ./control
            store_processed=False,
            # The folder is polled; the default 1 s cycle lets beat outpace the worker.
            polling_interval=0.1,
        )
    return options


def base_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.resolved_broker_url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": "ftq",
        "task_routes": {"training.*": {"queue": "training"}, "evals.*": {"queue": "evals"}},
    }


@functools.cache
def _publisher_app() -> Celery:
    app = Celery("ftq-publisher")
    app.conf.update(base_config(get_settings()))
    return app


def publish(task_name: str, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    _publisher_app().send_task(task_name, args=list(args), **options)
