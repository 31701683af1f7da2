"""When to make the next delivery attempt (Svix's schedule, jitter and throttling rules)."""

from __future__ import annotations

import math
import random

from service.webhooks.settings import WebhookSettings

_DEFAULT_RNG = random.Random()


def max_attempts(settings: WebhookSettings) -> int:
    """Attempts in total: the immediate one plus one per scheduled wait."""
    return len(settings.retry_schedule_seconds) + 1


def next_attempt_delay(
    attempt_number: int,
    settings: WebhookSettings,
    *,
    rng: random.Random | None = None,
    retry_after: float | None = None,
    overloaded: bool = False,
) -> float | None:
    """Seconds to wait before attempt ``attempt_number`` (1-based), or None when exhausted.

    Attempt 1 goes out immediately. Attempt n+1 waits ``schedule[n-1]`` scaled by a uniform
    factor in ``[1 - jitter, 1 + jitter]``, counted from attempt n's failure.

    ``retry_after`` (seconds, from the failed attempt's Retry-After) can lengthen the wait
    but only within ``[max(jittered wait, retry_after_min_seconds), base x
    retry_after_max_factor]``: a receiver may slow us down, but cannot stall the queue
    for days or make us retry sooner than the schedule.

    ``overloaded`` (the failed attempt got a 429 or timed out) makes the wait at least
    ``overload_penalty_seconds``.
    """
    if attempt_number < 1:
        raise ValueError("attempt numbers start at 1")
    if attempt_number == 1:
        return 0.0
    schedule = settings.retry_schedule_seconds
    if attempt_number - 1 > len(schedule):
        return None

    base = schedule[attempt_number - 2]
    jitter = settings.jitter
    delay = base * (rng or _DEFAULT_RNG).uniform(1 - jitter, 1 + jitter)

    if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
        lower = max(delay, settings.retry_after_min_seconds)
        upper = max(lower, base * settings.retry_after_max_factor)
        delay = min(max(retry_after, lower), upper)

    if overloaded:
        delay = max(delay, settings.overload_penalty_seconds)
    return delay
