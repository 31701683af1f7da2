"""The retry schedule: immediate first attempt, Svix's waits with ±20% jitter, throttling."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.webhooks.schedule import max_attempts, next_attempt_delay
from service.webhooks.settings import WebhookSettings

DEFAULTS = WebhookSettings()
SCHEDULE = DEFAULTS.retry_schedule_seconds


def test_default_schedule_is_svix():
    assert SCHEDULE == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert max_attempts(DEFAULTS) == 8
    # About 27 h 35 m from the first attempt to the last.
    assert sum(SCHEDULE) == 27 * 3600 + 35 * 60 + 5


def test_first_attempt_is_immediate():
    assert next_attempt_delay(1, DEFAULTS) == 0.0


@pytest.mark.parametrize("attempt", range(2, 9))
def test_each_wait_is_within_jitter_of_its_base(attempt: int):
    base = SCHEDULE[attempt - 2]
    rng = random.Random(attempt)
    delays = [next_attempt_delay(attempt, DEFAULTS, rng=rng) for _ in range(300)]
    assert all(d is not None and base * 0.8 <= d <= base * 1.2 for d in delays)
    spread = [d for d in delays if d is not None]
    # The jitter is actually applied, in both directions.
    assert min(spread) < base * 0.9 and max(spread) > base * 1.1


def test_exhausted_schedule_returns_none():
    assert next_attempt_delay(9, DEFAULTS) is None
    assert next_attempt_delay(50, DEFAULTS, retry_after=10, overloaded=True) is None


def test_attempt_numbers_start_at_one():
    with pytest.raises(ValueError):
        next_attempt_delay(0, DEFAULTS)


def test_without_jitter_waits_are_exact():
    settings = WebhookSettings(jitter=0)
    assert [next_attempt_delay(n, settings) for n in range(1, 10)] == [0.0, *SCHEDULE, None]


def test_custom_schedule():
    settings = WebhookSettings(retry_schedule_seconds=[1, 2], jitter=0)
    assert [next_attempt_delay(n, settings) for n in (1, 2, 3, 4)] == [0.0, 1, 2, None]


NO_JITTER = WebhookSettings(jitter=0)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (3, 10, 300),  # shorter than the schedule: the schedule wins
        (3, 450, 450),  # within [base, 2 x base]: honoured
        (3, 86_400, 600),  # a day: capped at 2 x base
        (2, 0, 5),
        (2, -30, 5),  # nonsense values are ignored
        (2, math.nan, 5),
        (2, math.inf, 5),
    ],
)
def test_retry_after_is_clamped_to_base_and_twice_base(attempt, retry_after, expected):
    assert next_attempt_delay(attempt, NO_JITTER, retry_after=retry_after) == expected


def test_retry_after_floor_setting():
    settings = WebhookSettings(jitter=0, retry_after_min_seconds=8)
    assert next_attempt_delay(2, settings, retry_after=1) == 8
    assert next_attempt_delay(2, settings) == 5  # the floor applies only to Retry-After


def test_overload_penalty_applies_after_429_or_timeout():
    assert next_attempt_delay(2, NO_JITTER, overloaded=True) == 60
    assert next_attempt_delay(2, NO_JITTER, retry_after=120, overloaded=True) == 60
    assert next_attempt_delay(4, NO_JITTER, overloaded=True) == 1800  # already longer
    assert next_attempt_delay(1, NO_JITTER, overloaded=True) == 0.0


@given(
    attempt=st.integers(1, 12),
    seed=st.integers(0, 2**32),
    retry_after=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    overloaded=st.booleans(),
)
def test_delay_always_within_bounds(attempt, seed, retry_after, overloaded):
    delay = next_attempt_delay(
        attempt, DEFAULTS, rng=random.Random(seed), retry_after=retry_after, overloaded=overloaded
    )
    if attempt == 1:
        assert delay == 0.0
    elif attempt > 8:
        assert delay is None
    else:
        base = SCHEDULE[attempt - 2]
        assert delay is not None and math.isfinite(delay)
        low = max(base * 0.8, 60.0 if overloaded else 0.0)
        high = max(base * 2, 60.0 if overloaded else 0.0)
        assert low <= delay <= high
