"""Which queue each task goes to, and which worker consumes it.

The routing table is what keeps a team's submission out of the polls' backlog: a mistake
here (a submission routed to the default queue, a queue no worker consumes) would not fail
any single-worker test, so it is pinned down here against Celery's own router.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from cli.processes import ALL_QUEUES, CONTROL_QUEUES, FOLLOW_QUEUES, worker_command
from service import broker

# Every task ftq defines, and the queue it must land on.
EXPECTED = {
    "jobs.submit": "submit",
    "jobs.admit": "submit",
    "jobs.poll_now": "submit",
    "jobs.sweep": "sweep",
    "jobs.reconcile": "sweep",
    "jobs.poll": "ftq",
    "jobs.import_results": "ftq",
    "files.validate": "ftq",
    "files.reconcile": "ftq",
    "webhooks.fanout": "ftq",
    "webhooks.sweep": "ftq",
    "webhooks.deliver": "ftq",
    "dashboard.purge_sessions": "ftq",
    "registry.shutdown_alerts": "ftq",
    "training.run": "training",
    "evals.run": "evals",
    "evals.gate": "evals",
    "evals.reconcile": "evals",
}


def _celery_queue(app: Celery, task_name: str) -> str:
    """The queue Celery itself picks when a publisher sends ``task_name`` by name."""
    route: dict[str, Any] = app.amqp.router.route({}, task_name)
    return str(route["queue"].name)


@pytest.fixture(scope="module")
def publisher() -> Celery:
    app = Celery("routing-test")
    app.conf.update(
        task_default_queue=broker.DEFAULT_QUEUE,
        task_routes={name: {"queue": queue} for name, queue in broker.TASK_QUEUES.items()},
    )
    return app


@pytest.mark.parametrize(("task_name", "queue"), sorted(EXPECTED.items()))
def test_each_task_goes_to_its_queue(publisher: Celery, task_name: str, queue: str) -> None:
    assert broker.queue_for(task_name) == queue
    assert _celery_queue(publisher, task_name) == queue


def test_the_worker_app_routes_with_the_same_table() -> None:
    from workers.app import app

    app.loader.import_default_modules()
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    # A task added later without a thought for its queue still lands somewhere consumed.
    assert set(EXPECTED) <= registered
    for name in registered:
        assert _celery_queue(app, name) == broker.queue_for(name), name


def _consumed(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


def test_the_layout_consumes_every_queue_once_and_keeps_submissions_apart() -> None:
    follow, control = _consumed(worker_command()), _consumed(worker_command(queues=CONTROL_QUEUES))
    assert control == {"submit", "sweep"}
    assert follow == {"ftq", "evals"} == set(FOLLOW_QUEUES.split(","))
    assert not follow & control  # no poll ever takes a submission's slot
    every = {broker.queue_for(name) for name in EXPECTED} - {"training"}  # GPU workers
    assert every == follow | control
    # ``ftq worker`` without --queues serves everything (a one-worker install).
    assert set(ALL_QUEUES.split(",")) == every


def test_every_periodic_wake_up_expires_by_the_time_the_next_is_due() -> None:
    from workers.app import MIN_WAKE_UP_LIFE_SECONDS, app

    schedule = app.conf.beat_schedule
    assert {"jobs.sweep", "jobs.admit", "jobs.reconcile", "webhooks.fanout"} <= set(schedule)
    for name, entry in schedule.items():
        life = entry["options"]["expires"]
        # A worker that fell behind finds at most a couple of copies of each, never a backlog.
        assert life == max(entry["schedule"], MIN_WAKE_UP_LIFE_SECONDS), name
