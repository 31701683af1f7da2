"""A worker killed with SIGKILL while the upstream holds the create request open: still
exactly one upstream job, and the ftq job still succeeds."""

from __future__ import annotations

from pathlib import Path

from tests.integration.stack import Stack, wait_for


def test_sigkill_during_create_yields_exactly_one_upstream_job(dataset: Path) -> None:
    stack = Stack("killcreate", extra_env={"SANDBOX_HOLD_CREATE_SECONDS": "30"})
    try:
        stack.start(workers=1)
        team = stack.create_team()
        client = stack.client(team.keys["member"])
        with dataset.open("rb") as handle:
            uploaded = client.files.create(file=handle, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=uploaded.id
        )

        # The sandbox has committed the upstream job and is holding the response open.
        wait_for(
            lambda: stack.sandbox.stats()["creates_by_ftq_job_id"].get(job.id) == 1,
            timeout=60,
            what="the upstream create to arrive",
        )
        assert stack.db(lambda s: _stage(s, job.id)) == "creating"
        stack.kill("worker0")  # the whole worker: main process and pool children

        stack.sandbox.set_config(hold_create_seconds=0)
        stack.start_worker("worker1")
        done = wait_for(
            lambda: (
                (j := client.fine_tuning.jobs.retrieve(job.id)).status
                in ("succeeded", "failed", "cancelled")
                and j
            ),
            timeout=120,
            what="the job to finish after the kill",
        )
        assert done.status == "succeeded", done.error
        stats = stack.sandbox.stats()
        assert stats["creates_by_ftq_job_id"] == {job.id: 1}
        assert stats["jobs_created"] == 1
        upstream = (
            stack.sandbox_client().fine_tuning.jobs.list(metadata={"ftq_job_id": job.id}).data
        )
        assert len(upstream) == 1 and upstream[0].id == stack.db(lambda s: _upstream_id(s, job.id))
        # The second attempt looked the job up instead of creating it again.
        assert stack.db(lambda s: _attempts(s, job.id)) >= 2
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def _job(session, job_id):  # type: ignore[no-untyped-def]
    from service.jobs.models import FineTuningJob

    return session.get(FineTuningJob, job_id)


def _stage(session, job_id):  # type: ignore[no-untyped-def]
    return _job(session, job_id).stage


def _upstream_id(session, job_id):  # type: ignore[no-untyped-def]
    return _job(session, job_id).upstream_job_id


def _attempts(session, job_id):  # type: ignore[no-untyped-def]
    return _job(session, job_id).attempts
