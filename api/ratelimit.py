"""The per-key request rate limit, applied by the auth dependency once the key is known.

Checked after authentication so the counter is keyed by team and key (not by IP) and the
team's own override applies; authentication itself is one indexed lookup by hash.
"""

from __future__ import annotations

import threading
import time

from sqlmodel import Session

from service.errors import RateLimited
from service.tenants import ratelimit
from service.tenants.limits import effective_limits
from service.tenants.service import Principal

# A team's per-minute figure is re-read this often, so an operator's change lands quickly
# without a query on every request.
_LIMIT_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, int]] = {}
_cache_lock = threading.Lock()


def _requests_per_minute(session: Session, team_id: str) -> int:
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(team_id)
    if cached and cached[0] > now:
        return cached[1]
    value = effective_limits(session, team_id).requests_per_minute
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[team_id] = (now + _LIMIT_CACHE_SECONDS, value)
    return value


def enforce(session: Session, principal: Principal) -> None:
    """Count this request against the key; 429 with Retry-After once the minute is spent."""
    limit = _requests_per_minute(session, principal.team_id)
    decision = ratelimit.hit(principal.team_id, principal.key_id, limit)
    if not decision.allowed:
        raise RateLimited(
            f"Rate limit reached for this API key: {decision.limit} requests per minute. "
            f"Try again in {decision.retry_after}s.",
            headers={
                "Retry-After": str(decision.retry_after),
                "x-ratelimit-limit-requests": str(decision.limit),
                "x-ratelimit-remaining-requests": "0",
            },
        )
