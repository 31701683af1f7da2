"""Exactly one upstream job per ftq job, and every job terminal, whatever breaks:
killed workers, a flushed broker, a restarted database, a flaky upstream, two beats."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from openai import OpenAI

from tests.integration.stack import REDIS_HOST, REDIS_PORT, Stack, Team, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


@contextlib.contextmanager
def private_stack(name: str, **env: str) -> Iterator[Stack]:
    stack = Stack(name, extra_env=env)
    try:
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def start_jobs(client: OpenAI, dataset: Path, count: int, **extra: Any) -> list[str]:
    with dataset.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="fine-tune").id
    return [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=file_id, **extra
        ).id
        for _ in range(count)
    ]


def wait_terminal(client: OpenAI, job_ids: list[str], timeout: float = 280) -> dict[str, Any]:
    def all_done() -> dict[str, Any] | None:
        jobs = {job_id: client.fine_tuning.jobs.retrieve(job_id) for job_id in job_ids}
        return jobs if all(j.status in TERMINAL for j in jobs.values()) else None

    return wait_for(all_done, timeout=timeout, interval=0.5, what="every job to finish")


def assert_exactly_once(stack: Stack, jobs: dict[str, Any]) -> None:
    creates = stack.sandbox.stats()["creates_by_ftq_job_id"]
    for job_id, job in jobs.items():
        assert job.status == "succeeded", (job_id, job.error)
        assert creates.get(job_id) == 1, (job_id, creates.get(job_id))
    # Every status change produced one outbox row, with strictly increasing sequences.
    rows = stack.db(_outbox_rows)
    by_job: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for object_id, event_type, sequence in rows:
        by_job[object_id].append((event_type, sequence))
    for job_id in jobs:
        events = by_job[job_id]
        types = [t for t, _ in events if not t.endswith("checkpoint.created")]
        assert len(types) == len(set(types)), (job_id, types)  # no transition twice
        assert types[-1] == "fine_tuning.job.succeeded"
        sequences = [s for _, s in events]
        assert sequences == sorted(set(sequences))


def _outbox_rows(session: Any) -> list[tuple[str, str, int]]:
    from sqlmodel import select

    from service.webhooks.outbox import OutboxEvent

    return [
        (e.object_id, e.event_type, e.sequence)
        for e in session.exec(select(OutboxEvent).order_by(OutboxEvent.pk))
    ]


def _job_field(stack: Stack, job_id: str, field: str) -> Any:
    def read(session: Any) -> Any:
        from service.jobs.models import FineTuningJob

        return getattr(session.get(FineTuningJob, job_id), field)

    return stack.db(read)


def test_sigkill_during_upload_and_during_polling(dataset: Path) -> None:
    with private_stack(
        "killupload",
        SANDBOX_FAULT_PATHS="^/v1/files$",
        SANDBOX_SLOW_RATE="1",
        SANDBOX_SLOW_SECONDS="6",
    ) as stack:
        stack.start()
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        with dataset.open("rb") as handle:
            # The team's own upload to ftq is not slowed: only ftq -> provider is.
            file_id = client.files.create(file=handle, purpose="fine-tune").id
        job_id = client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=file_id
        ).id
        wait_for(
            lambda: _job_field(stack, job_id, "stage") == "uploading", timeout=60, what="uploading"
        )
        time.sleep(1.0)  # the upload request is now held by the slow upstream
        stack.kill("worker0")
        stack.sandbox.set_config(slow_rate=0)
        stack.start_worker("worker1")
        wait_for(
            lambda: client.fine_tuning.jobs.retrieve(job_id).status == "running",
            timeout=90,
            what="running",
        )
        stack.kill("worker1")  # mid-polling
        stack.start_worker("worker2")
        jobs = wait_terminal(client, [job_id])
        assert_exactly_once(stack, jobs)
        assert _job_field(stack, job_id, "attempts") >= 2


def test_redis_flushed_mid_run_every_job_still_finishes(dataset: Path) -> None:
    # Files over the threshold go through the Uploads API in parts (shrunk here to 1 KB).
    with private_stack(
        "flush",
        FTQ_PROVIDER_UPLOAD_PART_THRESHOLD_BYTES="1024",
        FTQ_PROVIDER_UPLOAD_PART_BYTES="1024",
    ) as stack:
        stack.start()
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        job_ids = start_jobs(client, dataset, 3)
        wait_for(
            lambda: any(
                client.fine_tuning.jobs.retrieve(j).status in ("queued", "running") for j in job_ids
            ),
            timeout=60,
        )
        assert stack.redis_db is not None
        # FLUSHDB on this stack's own database: FLUSHALL would wipe other runs' brokers.
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=stack.redis_db).flushdb()
        jobs = wait_terminal(client, job_ids)
        assert_exactly_once(stack, jobs)
        # The three jobs share one dataset: uploaded once, in parts, through the Uploads API.
        assert dataset.stat().st_size > 1024
        assert len(stack.sandbox.requests(method="POST", path="/v1/uploads")) == 1
        parts = stack.sandbox.requests(method="POST", path="/v1/uploads/{upload_id}/parts")
        assert len(parts) == -(-dataset.stat().st_size // 1024)
        assert stack.sandbox.requests(method="POST", path="/v1/files") == []


@pytest.mark.serial
def test_postgres_restarted_mid_run(dataset: Path) -> None:
    with private_stack("pgrestart") as stack:
        stack.start()
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        job_ids = start_jobs(client, dataset, 3)
        wait_for(
            lambda: any(client.fine_tuning.jobs.retrieve(j).status == "running" for j in job_ids),
            timeout=60,
        )
        cluster = subprocess.run(
            ["ls", "/etc/postgresql"], capture_output=True, text=True
        ).stdout.split()[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"],
            check=True,
            timeout=120,
        )
        jobs = wait_terminal(client, job_ids)
        assert_exactly_once(stack, jobs)
        for job_id in job_ids:
            events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
            upstream = (
                stack.sandbox_client()
                .fine_tuning.jobs.list(metadata={"ftq_job_id": job_id})
                .data[0]
            )
            upstream_events = (
                stack.sandbox_client().fine_tuning.jobs.list_events(upstream.id, limit=100).data
            )
            copied = [e for e in events if e.message in {u.message for u in upstream_events}]
            assert len(copied) == len(upstream_events)  # none skipped, none doubled


def test_a_flaky_upstream_slows_jobs_but_never_duplicates_or_fails_them(dataset: Path) -> None:
    with private_stack(
        "flaky",
        SANDBOX_ERROR_RATE_429="0.07",
        SANDBOX_ERROR_RATE_500="0.07",
        SANDBOX_DROP_RATE="0.06",
        SANDBOX_DROP_MODE="after",
        SANDBOX_RETRY_AFTER_SECONDS="1",
        SANDBOX_FAULT_SEED="11",
        SANDBOX_FAULT_PATHS="^/v1/(files|fine_tuning)",
    ) as stack:
        stack.start()
        team = stack.create_team()
        client = stack.client(team.keys["member"], max_retries=5)
        job_ids = start_jobs(client, dataset, 4)
        jobs = wait_terminal(client, job_ids, timeout=240)
        assert_exactly_once(stack, jobs)
        faults = [r for r in stack.sandbox.requests() if r.get("fault")]
        assert len(faults) >= 5, "the upstream really misbehaved"


@pytest.mark.timeout(600)
def test_two_beats_do_not_duplicate_polls_events_or_outbox_rows(dataset: Path) -> None:
    with private_stack("twobeats") as stack:
        stack.start()
        stack.start_beat("beat2")
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        job_ids = start_jobs(client, dataset, 3)
        jobs = wait_terminal(client, job_ids)
        assert_exactly_once(stack, jobs)
        # No two polls of one job overlapped: every retrieve of a job is at least a lease-free
        # sweep apart, i.e. never two within the same 100 ms.
        retrieves = [
            r
            for r in stack.sandbox.requests(method="GET")
            if r["path"].startswith("/v1/fine_tuning/jobs/ftjob-") and r["path"].count("/") == 4
        ]
        by_job: dict[str, list[float]] = collections.defaultdict(list)
        for request in retrieves:
            by_job[request["path"]].append(request["time"])
        for times in by_job.values():
            times.sort()
            assert all(b - a > 0.1 for a, b in itertools.pairwise(times)), times


@pytest.mark.timeout(600)
def test_one_teams_twenty_jobs_do_not_starve_anothers_one(dataset: Path) -> None:
    with private_stack(
        "fairness",
        FTQ_MAX_ACTIVE_JOBS_PER_ACCOUNT="2",
        FTQ_MAX_ACTIVE_JOBS_PER_TEAM="20",
        FTQ_LIMITS__REQUESTS_PER_MINUTE="100000",  # the test polls 21 jobs in a loop
        SANDBOX_JOB_SPEED="10",
    ) as stack:
        stack.start()
        busy, quiet = stack.create_team("busy"), stack.create_team("quiet")
        busy_client, quiet_client = (
            stack.client(busy.keys["member"]),
            stack.client(quiet.keys["member"]),
        )
        busy_jobs = start_jobs(busy_client, dataset, 20)
        wait_for(
            lambda: (
                sum(
                    busy_client.fine_tuning.jobs.retrieve(j).model_extra["stage"] == "waiting"
                    for j in busy_jobs
                )
                >= 10
            ),
            timeout=180,  # generous: the suite runs test files side by side on 2 cores
            what="the busy team's jobs to queue",
        )
        with dataset.open("rb") as handle:
            quiet_file = quiet_client.files.create(file=handle, purpose="fine-tune").id
        wait_for(
            lambda: quiet_client.files.retrieve(quiet_file).status == "processed",
            timeout=60,
            what="the quiet team's file to be validated",
        )
        quiet_job = quiet_client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=quiet_file
        ).id
        # Its time in the queue lasts until the next slot frees (a few seconds at this job
        # speed), so it is judged by the slots handed out meanwhile, not by catching it waiting.
        done = wait_terminal(quiet_client, [quiet_job], timeout=240)[quiet_job]
        assert done.status == "succeeded"
        queued_at = min(
            e.created_at
            for e in quiet_client.fine_tuning.jobs.list_events(quiet_job, limit=100).data
            if e.message.startswith("Waiting in ftq's queue")
        )
        admitted = _job_field(stack, quiet_job, "admitted_at")
        # Events carry whole seconds: a busy job admitted within a second of the quiet one
        # joining the queue may have been handed its slot before the queue had it.
        after = dt.datetime.fromtimestamp(queued_at + 1, dt.UTC)
        admitted_meanwhile = [
            j
            for j in busy_jobs
            if (at := _job_field(stack, j, "admitted_at")) is not None and after <= at < admitted
        ]
        # Once queued, the quiet team had the next turn (FIFO would admit most of the busy
        # team's ten waiting jobs first); a pass that began before it queued may take one.
        assert len(admitted_meanwhile) <= 1, admitted_meanwhile
        # When the quiet job finished, most of the busy team's jobs were still waiting.
        still_waiting = sum(
            busy_client.fine_tuning.jobs.retrieve(j).status not in TERMINAL for j in busy_jobs
        )
        assert still_waiting >= 12, still_waiting


def test_upstream_concurrency_429_requeues_instead_of_failing(dataset: Path) -> None:
    with private_stack(
        "upstream429",
        SANDBOX_MAX_ACTIVE_JOBS="1",
        SANDBOX_RETRY_AFTER_SECONDS="1",
        SANDBOX_JOB_SPEED="8",
        FTQ_MAX_ACTIVE_JOBS_PER_ACCOUNT="3",
    ) as stack:
        stack.start()
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        job_ids = start_jobs(client, dataset, 3)
        jobs = wait_terminal(client, job_ids, timeout=180)
        assert_exactly_once(stack, jobs)
        messages = [
            e.message
            for j in job_ids
            for e in client.fine_tuning.jobs.list_events(j, limit=100).data
        ]
        assert any("concurrent job limit" in m for m in messages)


def test_cancel_while_the_create_is_in_flight_cancels_upstream_too(dataset: Path) -> None:
    # A slow upstream job (~14 s), so it is still running when the cancel reaches it.
    with private_stack(
        "cancelcreate", SANDBOX_HOLD_CREATE_SECONDS="3", SANDBOX_JOB_SPEED="1"
    ) as stack:
        stack.start()
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        job_id = start_jobs(client, dataset, 1)[0]
        wait_for(
            lambda: stack.sandbox.stats()["creates_by_ftq_job_id"].get(job_id) == 1,
            timeout=60,
            what="the create to be in flight",
        )
        client.fine_tuning.jobs.cancel(job_id)
        done = wait_terminal(client, [job_id])[job_id]
        assert done.status == "cancelled"
        upstream = (
            stack.sandbox_client().fine_tuning.jobs.list(metadata={"ftq_job_id": job_id}).data
        )
        assert len(upstream) == 1 and upstream[0].status == "cancelled"


def test_cancel_before_submission_is_local(dataset: Path, tmp_path: Path) -> None:
    with private_stack("cancellocal") as stack:
        stack.start(workers=0)  # nothing submits: the job stays with ftq
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        job_id = start_jobs(client, dataset, 1)[0]
        cancelled = client.fine_tuning.jobs.cancel(job_id)
        assert cancelled.status == "cancelled"
        stack.start_worker("worker0")
        time.sleep(3)
        assert client.fine_tuning.jobs.retrieve(job_id).status == "cancelled"
        assert stack.sandbox.stats()["creates_by_ftq_job_id"].get(job_id) is None
        Team  # noqa: B018 (keeps the import used for type readers)


def test_quiet_jobs_are_followed_with_list_calls_not_one_poll_each(dataset: Path) -> None:
    # A long upstream queue: six jobs sit in "queued" for ~8 s while the sweeper runs.
    with private_stack("listpoll", SANDBOX_QUEUED_SECONDS="32", FTQ_LIST_POLL_MIN_DUE="2") as stack:
        stack.start()
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        job_ids = start_jobs(client, dataset, 6)
        jobs = wait_terminal(client, job_ids, timeout=180)
        assert_exactly_once(stack, jobs)
        requests = stack.sandbox.requests(method="GET")
        list_calls = [
            r
            for r in requests
            if r["path"] == "/v1/fine_tuning/jobs" and "ftq_poll_group" in str(r.get("query"))
        ]
        retrieves = [
            r
            for r in requests
            if r["path"].count("/") == 4 and "/v1/fine_tuning/jobs/" in r["path"]
        ]
        assert list_calls, "the sweeper reads statuses with one list call per poll group"
        # Each list call stood in for a retrieve of every job of its group.
        assert len(retrieves) < 6 * len(list_calls), (len(retrieves), len(list_calls))
        # Only the first sync after the create and the ending retrieve a job: its status
        # changes and running metrics in between are read from the list calls, and the
        # polls they trigger fetch just events and checkpoints.
        per_job = collections.Counter(r["path"] for r in retrieves)
        assert max(per_job.values()) <= 3, per_job
