"""Following upstream jobs: the sweeper claims due jobs, a poll task syncs each one.

Nothing sleeps per job: ``next_poll_at`` and a lease live in the row, so a duplicate beat,
a redelivered message or a dead worker costs at most one extra poll after the lease lapses.

Statuses are read a poll group at a time (see poll_groups.py): one list call per group and
status-check slot covers up to a hundred jobs, and a change it shows is recorded by the sweep
at once. Per-job polls (events, checkpoints, the ending) are spent only where there is more to
read: a job whose status moved, a running job once per metrics interval (longer the more jobs
run, within the account's budget), a cancel to pass on. A job without a group tag keeps the
adaptive per-job interval: it doubles while nothing changes and resets when the status moves.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import random
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service import broker, ids, leases
from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.jobs import failures, lifecycle, poll_groups
from service.jobs.lifecycle import Outcome
from service.jobs.models import (
    SUBMISSION_STAGES,
    TERMINAL_STATUSES,
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
    JobStage,
    JobStatus,
)
from service.jobs.transitions import add_checkpoint, add_event
from service.providers.base import ErrorKind, ProviderError, UpstreamJob
from service.providers.registry import fine_tuning_provider_for_account

log = structlog.get_logger(__name__)

# One sweep claims up to this many due jobs; a group's jobs come due together, so this is
# about 40 groups' status checks at 10,000 active jobs and 64 groups.
SWEEP_BATCH = 5000


def next_interval(previous: float | None, changed: bool, rng: random.Random | None = None) -> float:
    settings = get_settings()
    low, high = settings.poll_interval_bounds()
    base = low if changed or previous is None else min(high, previous * 2)
    jitter = (rng or random).uniform(-settings.poll_jitter, settings.poll_jitter)
    return max(low * 0.5, base * (1 + jitter))


@dataclass(frozen=True)
class _Due:
    job_id: str
    account: str
    upstream_id: str
    upstream_status: str | None
    cancel_requested: bool
    due_at: float  # the slot the job was scheduled for (epoch seconds)

    @property
    def group(self) -> str:
        return poll_groups.group_of(self.job_id)


@dataclass
class _Plan:
    """What one sweep does with the jobs it claimed."""

    poll: list[str] = field(default_factory=list)  # per-job polls (ending, cancel, untagged)
    # Per-job polls for events and checkpoints only (a changed or running job): enqueued
    # without the lease, which the poll takes when it runs, so a backlog of polls never
    # keeps the sweep from the job's next status check.
    follow: list[str] = field(default_factory=list)
    # Follow-ups of a job that has just turned running: no checkpoint can be worth a call yet
    # (the next metrics poll and the ending read them).
    no_checkpoints: set[str] = field(default_factory=set)
    observed: dict[str, str] = field(default_factory=dict)  # job id -> new raw status
    # job id -> next status-check slot: nothing else to do until then.
    reschedule: dict[str, float] = field(default_factory=dict)


LIST_PAGE = 100  # OpenAI's largest page of jobs
LIST_THREADS = 4  # group lists of one sweep run side by side (each is one small request)


def _claim_due(owner: str) -> list[_Due]:
    """Lease every due tracking job (up to SWEEP_BATCH) in one statement."""
    settings = get_settings()
    now = utcnow()
    due_ids = (
        sa.select(col(FineTuningJob.id))
        .where(
            col(FineTuningJob.stage) == JobStage.tracking,
            col(FineTuningJob.next_poll_at) <= now,
            leases.not_leased(FineTuningJob, now),
        )
        .order_by(col(FineTuningJob.next_poll_at))
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True, of=FineTuningJob)  # type: ignore[arg-type]
        # MATERIALIZED: the locking select runs exactly once; as an ``IN (subquery)`` the
        # planner may rescan it and lease more than SWEEP_BATCH rows in one sweep.
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    claim = (
        sa.update(FineTuningJob)
        .where(col(FineTuningJob.id) == due_ids.c.id)
        .values(
            lease_owner=owner,
            lease_expires_at=now + dt.timedelta(seconds=settings.lease_seconds),
        )
        .returning(
            col(FineTuningJob.id),
            col(FineTuningJob.account),
            col(FineTuningJob.upstream_job_id),
            col(FineTuningJob.upstream_status),
            col(FineTuningJob.cancel_requested),
            col(FineTuningJob.next_poll_at),
        )
        .execution_options(synchronize_session=False)
    )
    with session_scope() as session:
        rows = session.execute(claim).all()
    return [
        _Due(job_id, account, upstream_id, status, bool(cancel), _epoch(due_at or now))
        for job_id, account, upstream_id, status, cancel, due_at in rows
        if upstream_id
    ]


def _epoch(moment: dt.datetime) -> float:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _list_group(
    account: str, group: str, wanted: set[str]
) -> dict[str, UpstreamJob] | ProviderError:
    """The group's jobs that ``wanted`` names, from one list call (more pages only for a
    group over a page, capped so a provider that ignores the filter costs a few pages)."""
    seen: dict[str, UpstreamJob] = {}
    cursor: str | None = None
    try:
        provider = fine_tuning_provider_for_account(account)
        for _ in range(len(wanted) // LIST_PAGE + 2):
            page, has_more = provider.list_jobs(
                after=cursor, limit=LIST_PAGE, metadata={poll_groups.POLL_GROUP_TAG: group}
            )
            seen.update({job.id: job for job in page if job.id in wanted})
            if not has_more or not page or len(seen) == len(wanted) or page[-1].id == cursor:
                break
            cursor = page[-1].id
    except LookupError as exc:
        return ProviderError(str(exc), kind=ErrorKind.transient)
    except ProviderError as error:
        return error
    return seen


def _running_by_account() -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(
            sa.select(col(FineTuningJob.account), sa.func.count())
            .where(
                col(FineTuningJob.stage) == JobStage.tracking,
                col(FineTuningJob.upstream_status) == JobStatus.running,
            )
            .group_by(col(FineTuningJob.account))
        ).all()
    return {account: int(count) for account, count in rows}


def _plan(claimed: list[_Due]) -> _Plan:
    """Check claimed jobs' statuses a group at a time; decide which need a per-job poll."""
    plan = _Plan()
    groups: dict[tuple[str, str], list[_Due]] = {}
    for due in claimed:
        if due.cancel_requested:
            plan.poll.append(due.job_id)  # the poll passes the cancel on
        else:
            groups.setdefault((due.account, due.group), []).append(due)
    if not groups:
        return plan
    running = _running_by_account()
    with concurrent.futures.ThreadPoolExecutor(max_workers=LIST_THREADS) as pool:
        listed = dict(
            zip(
                groups,
                pool.map(
                    lambda key: _list_group(key[0], key[1], {d.upstream_id for d in groups[key]}),
                    groups,
                ),
                strict=True,
            )
        )
    now = time.time()
    for (account, group), members in groups.items():
        seen = listed[(account, group)]
        if isinstance(seen, ProviderError):
            # The list failed (rate limit, outage): every member waits a slot, or what the
            # provider asked; per-job polls now would only add load to a struggling provider.
            log.warning("group_list_unavailable", account=account, group=group, error=str(seen))
            later = poll_groups.next_check(group, now + (seen.retry_after or 0.0))
            plan.reschedule.update({due.job_id: later for due in members})
            continue
        interval = poll_groups.metrics_interval(running.get(account, 0))
        for due in members:
            upstream = seen.get(due.upstream_id)
            status = lifecycle.map_status(upstream.status) if upstream else None
            if upstream is None or status is None:
                plan.poll.append(due.job_id)  # untagged (created before groups) or unknown
            elif status in TERMINAL_STATUSES:
                plan.poll.append(due.job_id)  # the ending needs the full sync
            elif status != due.upstream_status:
                plan.observed[due.job_id] = upstream.status
                plan.follow.append(due.job_id)  # its events and checkpoints follow
                if status == JobStatus.running:
                    plan.no_checkpoints.add(due.job_id)
                plan.reschedule[due.job_id] = poll_groups.next_check(group, now)
            elif status == JobStatus.running and poll_groups.metrics_due(
                due.job_id, due.due_at, interval
            ):
                plan.follow.append(due.job_id)
                plan.reschedule[due.job_id] = poll_groups.next_check(group, now)
            else:
                plan.reschedule[due.job_id] = poll_groups.next_check(group, now)
    return plan


def sweep(owner_prefix: str) -> list[str]:
    """Claim every due job (lease), check their statuses a poll group at a time, record the
    changes at once, and enqueue a per-job poll only where there is more to read (events and
    checkpoints of a changed or running job, an ending, a cancel, an untagged job); the rest
    wait for their group's next slot. Returns the claimed ids."""
    owner = f"{owner_prefix}:{ids.random_base62(8)}"
    claimed = _claim_due(owner)
    if not claimed:
        return []
    plan = _plan(claimed)
    with session_scope() as session:
        for job_id, raw_status in plan.observed.items():
            job = session.get(FineTuningJob, job_id, with_for_update=True)
            if job is None or job.lease_owner != owner or job.stage != JobStage.tracking:
                continue
            lifecycle.observe(session, job, raw_status)
            job.upstream_status = lifecycle.map_status(raw_status)
            job.updated_at = utcnow()
            session.add(job)
        by_slot: dict[float, list[str]] = {}
        for job_id, slot in plan.reschedule.items():
            by_slot.setdefault(slot, []).append(job_id)
        interval = poll_groups.check_interval()
        for slot, job_ids in by_slot.items():
            session.execute(
                sa.update(FineTuningJob)
                .where(col(FineTuningJob.id).in_(job_ids), col(FineTuningJob.lease_owner) == owner)
                .values(
                    next_poll_at=dt.datetime.fromtimestamp(slot, dt.UTC),
                    poll_interval_seconds=interval,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        for job_id in plan.poll:
            enqueue("jobs.poll", job_id, owner)
        for job_id in plan.follow:
            # The status is known: events (and checkpoints, unless it has just started).
            enqueue("jobs.poll", job_id, owner, True, job_id not in plan.no_checkpoints)
    return [due.job_id for due in claimed]


def admit() -> list[str]:
    """Hand free concurrency slots to queued jobs (round-robin by team)."""
    from service.jobs import capacity

    with session_scope() as session:
        return capacity.admit_all(session)


def reconcile() -> list[str]:
    """Re-enqueue submissions whose message was lost (flushed broker, killed worker).

    A message is presumed lost when its job has been untouched for ``submit_stale_seconds``
    and the submit queue has drained: a queue still holding messages is a backlog, not a
    loss, and copies added behind it would only slow it down (each costs an admission under
    the account lock). A message lost meanwhile is re-sent once the queue drains. Each
    re-sent job is touched, so it is re-sent at most once per period."""
    settings = get_settings()
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.submit_stale_seconds)
    # None (the broker cannot say) keeps the old behaviour: re-send what is stale.
    backlog = broker.queue_length(broker.SUBMIT_QUEUE)
    with session_scope() as session:
        job_ids = (
            list(
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
            if not backlog
            else []
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
            session.execute(
                sa.update(FineTuningJob)
                .where(col(FineTuningJob.id).in_([*job_ids, *importing]))
                .values(updated_at=now)
            )
    if job_ids or importing:
        log.info(
            "reconciler_requeued", submissions=len(job_ids), imports=len(importing), backlog=backlog
        )
    return [*job_ids, *importing]


def _sync(
    job_id: str,
    owner: str,
    upstream: UpstreamJob | None,
    provider_events: list,
    checkpoints: list,
) -> None:
    """Record what one poll read. ``upstream`` is None for a follow-up of a sweep that
    already recorded the status (and set the next check) from its group's list call."""
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
        if upstream is None:
            leases.clear(job)
            job.updated_at = utcnow()
            session.add(job)
            return
        status = lifecycle.map_status(upstream.status)
        changed = status is not None and status != job.upstream_status
        if status is not None:
            job.upstream_status = status
        job.estimated_finish = upstream.estimated_finish
        if upstream.hyperparameters:
            job.hyperparameters = upstream.hyperparameters
        leases.clear(job)
        if status in TERMINAL_STATUSES:
            _finish_from_upstream(session, job, upstream, status)
        else:
            lifecycle.observe(session, job, upstream.status)
            _schedule_next_check(job, upstream, changed)
        job.updated_at = utcnow()
        session.add(job)


def _schedule_next_check(job: FineTuningJob, upstream: UpstreamJob, changed: bool) -> None:
    """A job tagged with its poll group is next checked at its group's slot; one without
    (created before groups, or with no room left in its metadata) keeps the adaptive
    per-job interval."""
    group = poll_groups.group_of(job.id)
    if (upstream.metadata or {}).get(poll_groups.POLL_GROUP_TAG) == group:
        slot = poll_groups.next_check(group, time.time())
        job.poll_interval_seconds = poll_groups.check_interval()
        job.next_poll_at = dt.datetime.fromtimestamp(slot, dt.UTC)
        return
    job.poll_interval_seconds = next_interval(job.poll_interval_seconds, changed)
    job.next_poll_at = utcnow() + dt.timedelta(seconds=job.poll_interval_seconds)


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


def poll(job_id: str, owner: str, status_known: bool = False, checkpoints: bool = True) -> None:
    """One poll of one job under the lease the sweeper gave ``owner``.

    ``status_known``: the sweep enqueued it after reading (and recording) the job's status
    from its group's list call, so only events and checkpoints are read here; retrieving the
    job again would be a third request for nothing (a cancel asked for meanwhile still
    retrieves, to pass it on). ``checkpoints`` False: the job has just turned running, so
    its checkpoints wait for its next metrics poll or its ending."""
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
        upstream = None if status_known and not cancel else provider.get_job(upstream_id)
        if (
            upstream is not None
            and cancel
            and lifecycle.map_status(upstream.status) not in TERMINAL_STATUSES
        ):
            upstream = provider.cancel_job(upstream_id)
        status_now = lifecycle.map_status(upstream.status) if upstream else status_before
        events = provider.list_new_events(upstream_id, cursor)
        # Checkpoints appear while running and at the end; skip the call before that.
        wanted = (
            status_now in (JobStatus.running, JobStatus.succeeded)
            or status_before == JobStatus.running
        )
        found = provider.list_checkpoints(upstream_id) if wanted and checkpoints else []
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
        _sync(job_id, owner, upstream, events, found)
    except IntegrityError:
        # A concurrent sync inserted the same upstream event first; the next poll tidies up.
        log.warning("poll_sync_conflict", job_id=job_id)
