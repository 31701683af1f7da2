"""The worker layout keeps a team's submission and the sweep apart from the polls.

With the polling worker gone (its queue piling up), the submitter alone still creates every
job upstream exactly once, and the sweep still records each job's move to ``running`` from
its group's list call; the per-job polls wait in their own queue and run once a polling
worker is back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from cli.processes import FOLLOW_QUEUES
from tests.integration.stack import REDIS_HOST, REDIS_PORT, Stack, wait_for

MODEL = "gpt-4o-mini-2024-07-18"
JOBS = 3


def _queued_tasks(stack: Stack, queue: str) -> list[tuple[str, str]]:
    """(task name, args repr) of every message waiting in ``queue`` (kombu's Redis list)."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=stack.redis_db)
    messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    return [(m["headers"]["task"], m["headers"].get("argsrepr", "")) for m in messages]


def _upstream_events(stack: Stack, job_id: str) -> int:
    def count(session: Any) -> int:
        from sqlmodel import col, func, select

        from service.jobs.models import JobEvent

        return int(
            session.exec(
                select(func.count()).where(
                    JobEvent.job_id == job_id, col(JobEvent.upstream_event_id).is_not(None)
                )
            ).one()
        )

    return int(stack.db(count))


def test_submissions_and_sweep_run_while_the_polling_worker_is_down(dataset: Path) -> None:
    stack = Stack("queues")
    try:
        stack.start(
            workers=1, split_queues=True
        )  # worker0 (polls, files, webhooks) + submitter0 (submit, sweep)
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        with dataset.open("rb") as handle:
            file_id = client.files.create(file=handle, purpose="fine-tune").id
        wait_for(
            lambda: (
                client.files.retrieve(file_id).model_extra["validation"]["status"] == "completed"
            ),
            timeout=90,
            what="the file's report (validated on the polling worker)",
        )

        stack.kill("worker0", alone=True)  # the polling worker only; submitter0 lives on
        assert "submitter0" in stack.group.children
        # Long enough upstream that the sweep sees `running` well before the job ends (the
        # sandbox plans a job when the create reaches it, so this stays set).
        stack.sandbox.set_config(max_running_seconds=600, step_seconds=60)
        job_ids = [
            client.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id
            for _ in range(JOBS)
        ]
        wait_for(
            lambda: all(
                stack.sandbox.stats()["creates_by_ftq_job_id"].get(j) == 1 for j in job_ids
            ),
            timeout=90,
            what="every create upstream, with no polling worker alive",
        )
        # The sweep (on the submitter) reads each job's group and records the status change.
        wait_for(
            lambda: all(client.fine_tuning.jobs.retrieve(j).status == "running" for j in job_ids),
            timeout=120,
            what="the sweep to record `running` with no polling worker alive",
        )
        # Their per-job polls went to the polling queue and are still waiting there.
        waiting = _queued_tasks(stack, "ftq")
        for job_id in job_ids:
            assert any(task == "jobs.poll" and job_id in args for task, args in waiting), (
                job_id,
                waiting,
            )
        assert all(_upstream_events(stack, j) == 0 for j in job_ids)
        assert not any(task == "jobs.submit" for task, _ in waiting)

        stack.start_worker("worker1", queues=FOLLOW_QUEUES)  # a polling worker is back
        wait_for(
            lambda: all(_upstream_events(stack, j) > 0 for j in job_ids),
            timeout=120,
            what="the queued polls to run",
        )
        for job_id in job_ids:
            client.fine_tuning.jobs.cancel(job_id)  # passed on by jobs.poll_now (submit queue)
        wait_for(
            lambda: all(client.fine_tuning.jobs.retrieve(j).status == "cancelled" for j in job_ids),
            timeout=120,
            what="every cancel to reach the provider",
        )
        creates = stack.sandbox.stats()["creates_by_ftq_job_id"]
        assert {j: creates.get(j) for j in job_ids} == dict.fromkeys(job_ids, 1)
        upstream = stack.sandbox_client().fine_tuning.jobs.list(limit=100).data
        assert sorted(u.status for u in upstream) == ["cancelled"] * JOBS
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def test_a_pending_validation_is_resent_only_when_its_queue_has_drained() -> None:
    """The files reconciler, like the jobs one: a backlog is not a loss. Copies added behind
    a backlog every tick would only grow it."""
    import datetime as dt

    stack = Stack("filesreconcile")  # no processes: nothing consumes the queue
    try:
        stack.migrate()
        team = stack.create_team()
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=stack.redis_db)
        with stack.settings_env():
            from service import broker
            from service.dispatch import install_publisher
            from service.files import reports
            from service.files.models import File

            install_publisher(broker.publish)
            try:

                def add_pending(session: Any) -> None:
                    session.add(
                        File(
                            id="file-pendinglost",
                            team_id=team.id,
                            filename="lost.jsonl",
                            purpose="fine-tune",
                            bytes=1,
                            sha256="0" * 64,
                            storage_key="lost",
                            created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                        )
                    )

                stack.db(add_pending)
                queue = broker.queue_for("files.validate")
                broker.publish("files.validate", ("file-other",), {})  # another file's backlog
                assert reports.reconcile() == []
                assert client.llen(queue) == 1
                client.delete(queue)  # drained: the pending file's message is presumed lost
                assert reports.reconcile() == ["file-pendinglost"]
                assert [args for _, args in _queued_tasks(stack, queue)] == ["['file-pendinglost']"]
            finally:
                install_publisher(None)
    finally:
        stack.stop()
