"""Broker connection settings, shared by the worker app and by publishers (API, CLI).

The broker carries only wake-ups (task names with ids), so any process can publish by name
without importing the task code.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

from service.config import Settings, get_settings


class _AtomicFilesystemChannel(filesystem.Channel):  # type: ignore[misc]
    """kombu's filesystem channel, but a message appears in the folder only once written.

    kombu opens the message file under its final name and then writes it; a consumer that
    lists the folder in between moves the empty file away and dies on the JSON (an
    "Unrecoverable error" that stops the worker). Here the message is written under a name
    no queue matches and renamed into place, so a consumer sees all of it or nothing."""

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        stamp = round(time.monotonic() * 1000)
        final = os.path.join(self.data_folder_out, f"{stamp}_{uuid.uuid4()}.{queue}.msg")
        partial = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class AtomicFilesystemTransport(filesystem.Transport):  # type: ignore[misc]
    Channel = _AtomicFilesystemChannel


# Every process that talks to the broker imports this module first (the worker app, the
# publishers), so ``filesystem://`` resolves to the atomic variant everywhere.
TRANSPORT_ALIASES["filesystem"] = f"{__name__}:AtomicFilesystemTransport"

# Queues. A user's submission never waits behind following work: submissions (and the
# admission that hands out slots, and a cancel to pass on) have their own queue, the sweep
# and the reconciler theirs, so a backlog of per-job polls in the default queue delays
# neither. Production runs a worker consuming only SUBMIT and SWEEP beside the ones that
# consume DEFAULT (see cli/processes.py); a single worker may still consume them all.
DEFAULT_QUEUE = "ftq"
SUBMIT_QUEUE = "submit"
SWEEP_QUEUE = "sweep"
TRAINING_QUEUE = "training"
EVALS_QUEUE = "evals"

# Task name -> queue; names not listed (polls, files, webhooks, ...) go to DEFAULT_QUEUE.
# Exact names first; Celery also accepts the glob patterns used for training and evals.
TASK_QUEUES: dict[str, str] = {
    "jobs.submit": SUBMIT_QUEUE,
    "jobs.admit": SUBMIT_QUEUE,
    # A cancel the provider must hear about now is a user's request, like a submission.
    "jobs.poll_now": SUBMIT_QUEUE,
    "jobs.sweep": SWEEP_QUEUE,
    "jobs.reconcile": SWEEP_QUEUE,
    "training.*": TRAINING_QUEUE,
    "evals.*": EVALS_QUEUE,
}


def queue_for(task_name: str) -> str:
    """The queue ``task_name`` is published to (the routing Celery applies, spelt out)."""
    if task_name in TASK_QUEUES:
        return TASK_QUEUES[task_name]
    for pattern, queue in TASK_QUEUES.items():
        if pattern.endswith(".*") and task_name.startswith(pattern[:-1]):
            return queue
    return DEFAULT_QUEUE


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
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
    }


def _publisher_app() -> Celery:
    return _publisher_app_for(get_settings().resolved_broker_url)


@functools.cache
def _publisher_app_for(broker_url: str) -> Celery:
    # Keyed by the broker URL, not cached once per process: a process whose settings change
    # (the test suite, one stack after another) never publishes to a stale broker.
    app = Celery("ftq-publisher")
    app.conf.update(base_config(get_settings()))
    return app


def publish(task_name: str, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    _publisher_app().send_task(task_name, args=list(args), **options)


def queue_length(queue: str) -> int | None:
    """Messages waiting in ``queue`` (not those a worker has reserved), or None when the
    broker cannot be asked. A plain declare: on Redis an empty queue has no key at all."""
    try:
        with _publisher_app().connection_for_read() as connection:
            declared = connection.default_channel.queue_declare(queue=queue, passive=False)
            return int(declared.message_count)
    except Exception:  # the caller falls back to its cautious path
        return None
