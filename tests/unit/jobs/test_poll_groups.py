"""Poll groups: tags at create, status-check slots, the metrics cadence within a budget."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator

import pytest

from service.config import reset_settings_cache
from service.jobs import poll_groups


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FTQ_POLL_GROUPS", "64")
    monkeypatch.setenv("FTQ_STATUS_CHECK_SECONDS", "30")
    monkeypatch.setenv("FTQ_POLL_INTERVAL_MAX_SECONDS", "600")
    monkeypatch.setenv("FTQ_METRICS_POLL_BUDGET_PER_SECOND", "12")
    reset_settings_cache()
    yield
    reset_settings_cache()


def test_groups_are_stable_and_spread() -> None:
    ids = [f"ftjob-{i:06d}" for i in range(10_000)]
    groups = Counter(poll_groups.group_of(job_id) for job_id in ids)
    assert set(groups) == {str(g) for g in range(64)}
    # 156 a group on average: no group needs more than two pages of 100.
    assert max(groups.values()) <= 200
    assert poll_groups.group_of("ftjob-1") == poll_groups.group_of("ftjob-1")


def test_tag_added_unless_the_metadata_is_full() -> None:
    tagged = poll_groups.tagged_metadata("ftjob-1", {"team": "a"})
    assert tagged == {"team": "a", "ftq_poll_group": poll_groups.group_of("ftjob-1")}
    full = {f"k{i}": "v" for i in range(15)}  # with ftq_job_id, 16 pairs: no room
    assert poll_groups.tagged_metadata("ftjob-1", full) == full
    assert poll_groups.tagged_metadata("ftjob-1", {"ftq_poll_group": "x"}) == {
        "ftq_poll_group": "x"
    }


def test_check_slots_follow_a_grid_with_a_phase_per_group() -> None:
    now = 1_800_000_000.0
    for group in ("0", "17", "63"):
        slot = poll_groups.next_check(group, now)
        assert now < slot <= now + 30
        # The slot after a slot is exactly one interval later: one list per group per period.
        assert poll_groups.next_check(group, slot) == pytest.approx(slot + 30)
    phases = {round(poll_groups.next_check(str(g), now) % 30, 6) for g in range(64)}
    assert len(phases) == 64  # groups come due at 64 different moments of each period


def test_check_interval_never_exceeds_the_longest_poll_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FTQ_POLL_INTERVAL_MAX_SECONDS", "1.5")
    reset_settings_cache()
    assert poll_groups.check_interval() == 1.5


def test_metrics_interval_stays_within_the_budget() -> None:
    assert poll_groups.metrics_interval(100) == 600  # few jobs: the adaptive cap
    interval = poll_groups.metrics_interval(10_000)
    assert 10_000 * 2 / interval <= 12 + 1e-9


@pytest.mark.parametrize("interval", [600.0, 1667.0])
def test_a_running_job_gets_one_metrics_poll_per_interval(interval: float) -> None:
    start = 1_800_000_000.0
    checks = [start + 30 * k for k in range(int(10 * interval / 30))]
    for job_id in ("ftjob-a", "ftjob-b", "ftjob-c"):
        due = [t for t in checks if poll_groups.metrics_due(job_id, t, interval)]
        assert 9 <= len(due) <= 11
        gaps = [b - a for a, b in itertools.pairwise(due)]
        assert all(interval - 30 <= gap <= interval + 30 for gap in gaps)
