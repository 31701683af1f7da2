"""Poll groups: reading many upstream jobs' statuses with one list call.

Rule: every upstream job carries ``metadata={"ftq_poll_group": g}`` with ``g`` derived from
the ftq job id (a stable hash modulo ``poll_groups``), so the job list's metadata filter
returns a whole group at once. A group's status check is due on a fixed grid
(every ``status_check_seconds``, offset by the group's phase), so all of a group's jobs come
due in the same sweep and cost one list call between them, and the sweeps spread the groups
evenly over the interval instead of listing them all at once. A running job's per-job poll
(events, checkpoints) is due once per metrics interval, at a phase of its own; that interval
grows with the number of running jobs so that they stay within the account's budget.

Everything here is arithmetic: no state, so any sweeper on any host computes the same plan.
"""

from __future__ import annotations

import hashlib
import math

from service.config import get_settings

POLL_GROUP_TAG = "ftq_poll_group"
# OpenAI accepts at most 16 metadata pairs; ftq_job_id takes one of them.
MAX_METADATA_PAIRS = 16


def _hash(job_id: str) -> int:
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")


def group_of(job_id: str) -> str:
    return str(_hash(job_id) % max(1, get_settings().poll_groups))


def tagged_metadata(job_id: str, user_metadata: dict[str, str]) -> dict[str, str]:
    """The metadata to create the upstream job with: the team's own pairs plus the poll
    group, unless that would pass the provider's limit (then the job is polled alone)."""
    if POLL_GROUP_TAG in user_metadata or len(user_metadata) + 2 > MAX_METADATA_PAIRS:
        return dict(user_metadata)
    return {**user_metadata, POLL_GROUP_TAG: group_of(job_id)}


def check_interval() -> float:
    """Seconds between two status checks of a group: never longer than the longest per-job
    interval (so configurations with short intervals, like the tests', stay as fresh)."""
    settings = get_settings()
    return max(0.05, min(settings.status_check_seconds, settings.poll_interval_max_seconds))


def _phase(group: str, interval: float) -> float:
    groups = max(1, get_settings().poll_groups)
    return (int(group) % groups) / groups * interval if group.isdigit() else 0.0


def next_check(group: str, now: float) -> float:
    """The group's next status-check slot strictly after ``now`` (epoch seconds)."""
    interval = check_interval()
    phase = _phase(group, interval)
    return (math.floor((now - phase) / interval) + 1) * interval + phase


def metrics_interval(running_jobs: int) -> float:
    """Seconds between two per-job polls of a running job on an account with
    ``running_jobs`` of them: the adaptive cap, or longer to stay within the budget
    (each such poll costs two requests: events and checkpoints; the status comes from the
    group's list call)."""
    settings = get_settings()
    budget = max(0.1, settings.metrics_poll_budget_per_second)
    return max(settings.poll_interval_max_seconds, running_jobs * 2.0 / budget)


def metrics_due(job_id: str, checked_at: float, interval: float) -> bool:
    """Whether the job's own metrics slot fell within the status-check period that ends at
    ``checked_at`` (so each running job gets one per-job poll per ``interval``)."""
    period = check_interval()
    if interval <= period:
        return True
    phase = (_hash(job_id) % 10_000) / 10_000 * interval
    return math.floor((checked_at - phase) / interval) != math.floor(
        (checked_at - period - phase) / interval
    )
