"""Following upstream jobs: the sweeper claims due jobs, a poll task syncs each one.

Nothing sleeps per job: ``next_poll_at`` and a lease live in the row, so a duplicate beat,
a redelivered message or a dead worker costs at most one extra poll after the lease lapses.
The interval adapts: it doubles while nothing changes and resets when the status moves.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from service import ids, leases
from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.jobs import failures, lifecycle
from service.jobs.lifecycle import Outcome
from service.jobs.models import (
    SUBMISSION_STAGES,
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
    JobStage,
    JobStatus,
)
from service.jobs.transitions import add_checkpoint, add_event
from service.providers.base import ErrorKind, ProviderError, UpstreamJob
from service.providers.registry import fine_tuning_provider_for_account

TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

log = structlog.get_logger(__name__)

SWEEP_BATCH = 200


def next_interval(previous: float | None, changed: bool, rng: random.Random | None = None) -> float:
    settings = get_settings()
    low, high = settings.poll_interval_bounds()
    base = low if changed or previous is None else min(high, previous * 2)
    jitter = (rng or random).uniform(-settings.poll_jitter, settings.poll_jitter)
    return max(low * 0.5, base * (1 + jitter))


@dataclass(frozen=True)
class _Due:
    job_id: str
    owner: str
    account: str
    upstream_id: str
    upstream_status: str | None
    cancel_requested: bool


# While an upstream job sits in one of these, nothing but its status can change; a list call
# that shows the status unchanged makes the per-job poll unnecessary.
QUIET_STATUSES = frozenset({"validating_files", "queued", "paused"})
LIST_PAGE = 100


def _claim_due(owner_prefix: str) -> list[_Due]:
    settings = get_settings()
    now = utcnow()
    claimed: list[_Due] = []
    with session_scope() as session:
        due = session.exec(
            select(FineTuningJob)
            .where(
                FineTuningJob.stage == JobStage.tracking,
                FineTuningJob.next_poll_at <= now,  # type: ignore[operator]
                leases.not_leased(FineTuningJob, now),
            )
            .order_by(FineTuningJob.next_poll_at)  # type: ignore[arg-type]
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        for job in due:
            owner = f"{owner_prefix}:{ids.random_base62(8)}"
            result = session.execute(
                sa.update(FineTuningJob)
                .where(FineTuningJob.id == job.id, leases.not_leased(FineTuningJob, now))  # type: ignore[arg-type]
                .values(
                    lease_owner=owner,
                    lease_expires_at=now + dt.timedelta(seconds=settings.lease_seconds),
                )
            )
            if result.rowcount and job.upstream_job_id:  # type: ignore[attr-defined]
                claimed.append(
                    _Due(
                        job.id,
                        owner,
                        job.account,
                        job.upstream_job_id,
                        job.upstream_status,
                        job.cancel_requested,
                    )
                )
    return claimed


def _unchanged_by_list(claimed: list[_Due]) -> set[str]:
    """Jobs whose quiet upstream status a list call shows unchanged (one request per page
    of up to 100 jobs instead of one poll per job)."""
    unchanged: set[str] = set()
    by_account: dict[str, list[_Due]] = {}
    for due in claimed:
        if due.upstream_status in QUIET_STATUSES and not due.cancel_requested:
            by_account.setdefault(due.account, []).append(due)
    for account, group in by_account.items():
        if len(group) < get_settings().list_poll_min_due:
            continue
        wanted = {due.upstream_id: due for due in group}
        seen: dict[str, str] = {}
        cursor: str | None = None
        try:
            provider = fine_tuning_provider_for_account(account)
            for _ in range(len(group) // LIST_PAGE + 3):
                page, has_more = provider.list_jobs(after=cursor, limit=LIST_PAGE)
                seen.update({j.id: j.status for j in page if j.id in wanted})
                if not has_more or not page or len(seen) == len(wanted):
                    break
                if page[-1].id == cursor:
                    break  # a cursor that does not move: stop, the polls cover the rest
                cursor = page[-1].id
        except (ProviderError, LookupError) as error:
            log.warning("list_poll_unavailable", account=account, error=str(error))
            continue
        unchanged.update(
            due.job_id
            for upstream_id, due in wanted.items()
            if seen.get(upstream_id) == due.upstream_status
        )
    return unchanged


def sweep(owner_prefix: str) -> list[str]:
    """Claim every due job (lease); jobs a list call shows unchanged are rescheduled, every
    other one gets a poll task. Returns the claimed ids."""
    claimed = _claim_due(owner_prefix)
    unchanged = _unchanged_by_list(claimed)
    with session_scope() as session:
        for due in claimed:
            if due.job_id not in unchanged:
                enqueue("jobs.poll", due.job_id, due.owner)
                continue
            job = session.get(FineTuningJob, due.job_id, with_for_update=True)
            if job is None or job.lease_owner != due.owner:
                continue
            job.poll_interval_seconds = next_interval(job.poll_interval_seconds, changed=False)
            job.next_poll_at = utcnow() + dt.timedelta(seconds=job.poll_interval_seconds)
            leases.clear(job)
            session.add(job)
    return [due.job_id for due in claimed]


def admit() -> list[str]:
    """Hand free concurrency slots to queued jobs (round-robin by team)."""
    from service.jobs import capacity

    with session_scope() as session:
        return capacity.admit_all(session)


def reconcile() -> list[str]:
    """Re-enqueue submissions whose message was lost (flushed broker, killed worker)."""
    settings = get_settings()
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.submit_stale_seconds)
    with session_scope() as session:
        job_ids = list(
            session.exec(
                select(FineTuningJob.id)
                .where(
                    FineTuningJob.stage.in_([s.value for s in SUBMISSION_STAGES]),  # type: ignore[attr-defined]
                    FineTuningJob.updated_at < stale,  # type: ignore[operator]
                    leases.not_leased(FineTuningJob, now),
                )
                .limit(SWEEP_BATCH)
            )
        )
        for job_id in job_ids:
            enqueue("jobs.submit", job_id)
        # Result files whose import task was lost (flushed broker, killed worker).
        importing = list(
            session.exec(
                select(FineTuningJob.id)
                .where(
                    FineTuningJob.results_pending == True,  # noqa: E712
                    FineTuningJob.updated_at < stale,  # type: ignore[operator]
                )
                .limit(SWEEP_BATCH)
            )
        )
        for job_id in importing:
            enqueue("jobs.import_results", job_id)
    if job_ids or importing:
        log.info("reconciler_requeued", submissions=len(job_ids), imports=len(importing))
    return [*job_ids, *importing]


def _sync(
    job_id: str, owner: str, upstream: UpstreamJob, provider_events: list, checkpoints: list
) -> None:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner:
            return  # our lease lapsed and someone else polls now
        known_events = set(
            session.exec(
                select(JobEvent.upstream_event_id).where(
                    JobEvent.job_id == job.id,
                    JobEvent.upstream_event_id.in_([e.id for e in provider_events]),  # type: ignore[union-attr]
                )
            )
        )
        for event in provider_events:
            if event.id not in known_events:
                add_event(
                    session,
                    job,
                    event.message,
                    level=event.level,
                    type=event.type,
                    data=event.data,
                    created_at=event.created_at,
                    upstream_event_id=event.id,
                )
        if provider_events:
            job.upstream_events_cursor = provider_events[-1].id
        known_ckpts = set(
            session.exec(
                select(JobCheckpoint.upstream_checkpoint_id).where(JobCheckpoint.job_id == job.id)
            )
        )
        for ckpt in sorted(checkpoints, key=lambda c: c.step_number):
            if ckpt.id not in known_ckpts:
                add_checkpoint(
                    session,
                    job,
                    JobCheckpoint(
                        id=ids.checkpoint_id(),
                        job_id=job.id,
                        created_at=ckpt.created_at,
                        step_number=ckpt.step_number,
                        fine_tuned_model_checkpoint=ckpt.fine_tuned_model_checkpoint,
                        metrics=ckpt.metrics,
                        upstream_checkpoint_id=ckpt.id,
                    ),
                )
        status = lifecycle.map_status(upstream.status)
        changed = status is not None and status != job.upstream_status
        if status is not None:
            job.upstream_status = status
        job.estimated_finish = upstream.estimated_finish
        if upstream.hyperparameters:
            job.hyperparameters = upstream.hyperparameters
        leases.clear(job)
        if status in TERMINAL:
            _finish_from_upstream(session, job, upstream, status)
        else:
            lifecycle.observe(session, job, upstream.status)
            job.poll_interval_seconds = next_interval(job.poll_interval_seconds, changed)
            job.next_poll_at = utcnow() + dt.timedelta(seconds=job.poll_interval_seconds)
        job.updated_at = utcnow()
        session.add(job)


def _finish_from_upstream(
    session: Session, job: FineTuningJob, upstream: UpstreamJob, status: JobStatus
) -> None:
    """The one ending of an upstream job, after its events and checkpoints are in."""
    if upstream.result_files and not job.result_files:
        job.result_files = list(upstream.result_files)
        job.results_pending = True
        enqueue("jobs.import_results", job.id)
    error = None
    if status == JobStatus.failed:
        error = (
            failures.job_error_from_upstream(upstream.error)
            if upstream.error
            else failures.job_error(
                failures.PROVIDER_INTERNAL, "The provider reported the job failed without a reason."
            )
        )
    lifecycle.finish(
        session,
        job,
        Outcome(
            status,
            fine_tuned_model=upstream.fine_tuned_model,
            trained_tokens=upstream.trained_tokens,
            error=error,
        ),
    )


def _back_off(job_id: str, owner: str, error: ProviderError) -> None:
    settings = get_settings()
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner:
            return
        interval = next_interval(job.poll_interval_seconds, changed=False)
        if error.retry_after:
            interval = max(interval, error.retry_after)  # the provider said when
        interval = min(interval, settings.poll_interval_max_seconds * 2)
        job.poll_interval_seconds = interval
        job.next_poll_at = utcnow() + dt.timedelta(seconds=interval)
        leases.clear(job)
        session.add(job)
    log.warning("poll_backoff", job_id=job_id, error=error.message, seconds=round(interval, 2))


def _renew_lease(job_id: str, owner: str) -> bool:
    """Hold (or take back) the poll lease: a message that waited in a slow queue past its
    lease may still poll, unless another poller has claimed the job since."""
    with session_scope() as session:
        return leases.claim(
            session,
            FineTuningJob,
            job_id,
            owner,
            get_settings().lease_seconds,
            where=(FineTuningJob.stage == JobStage.tracking,),  # type: ignore[arg-type]
            steal_from=owner,
        )


def poll_now(job_id: str) -> None:
    """Poll a job at once (a cancel to pass on): under a fresh lease, if nobody holds one."""
    poll(job_id, f"now:{ids.random_base62(8)}")


def poll(job_id: str, owner: str) -> None:
    """One poll of one job under the lease the sweeper gave ``owner``."""
    if not _renew_lease(job_id, owner):
        return
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None or job.lease_owner != owner or job.stage != JobStage.tracking:
            return
        upstream_id, account = job.upstream_job_id, job.account
        cursor, cancel = job.upstream_events_cursor, job.cancel_requested
        status_before = job.upstream_status
    assert upstream_id is not None
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        provider = fine_tuning_provider_for_account(account)
    except LookupError as exc:
        _back_off(job_id, owner, ProviderError(str(exc), kind=ErrorKind.transient))
        return
    try:
        upstream = provider.get_job(upstream_id)
        if cancel and lifecycle.map_status(upstream.status) not in TERMINAL:
            upstream = provider.cancel_job(upstream_id)
        events = provider.list_new_events(upstream_id, cursor)
        # Checkpoints appear while running and at the end; skip the call before that.
        checkpoints = (
            provider.list_checkpoints(upstream_id)
            if lifecycle.map_status(upstream.status) in (JobStatus.running, JobStatus.succeeded)
            or status_before == JobStatus.running
            else []
        )
    except ProviderError as error:
        if error.kind == ErrorKind.not_found:
            error = ProviderError(
                f"The upstream job {upstream_id} no longer exists.", kind=ErrorKind.permanent
            )
            with session_scope() as session:
                job = session.get(FineTuningJob, job_id, with_for_update=True)
                if job is not None and job.lease_owner == owner:
                    lifecycle.fail(session, job, failures.job_error_from_provider(error))
            return
        _back_off(job_id, owner, error)
        return
    try:
        _sync(job_id, owner, upstream, events, checkpoints)
    except IntegrityError:
        # A concurrent sync inserted the same upstream event first; the next poll tidies up.
        log.warning("poll_sync_conflict", job_id=job_id)
