"""Per-key request rate limit: a fixed one-minute window, keyed by team and key.

With Redis as the broker the counters live in Redis, so every API replica shares them;
otherwise (the embedded default: one API process) they live in this process. Keys are
prefixed with the team (OWASP multi-tenant cheat sheet). If Redis is unreachable the
limiter lets requests through: the broker being down is reported by /readyz, and refusing
every request would turn a degraded broker into a full outage.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass

import structlog

from service.config import get_settings

log = structlog.get_logger(__name__)

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds until the window resets (0 when allowed)


class MemoryCounter:
    """Counters for one process (the embedded default has a single API process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window, count)

    def hit(self, key: str, window: int) -> int:
        with self._lock:
            seen_window, count = self._counts.get(key, (window, 0))
            count = count + 1 if seen_window == window else 1
            self._counts[key] = (window, count)
            if len(self._counts) > 100_000:  # drop stale windows; bounded under any flood
                self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
            return count


class RedisCounter:
    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def hit(self, key: str, window: int) -> int:
        name = f"ftq:ratelimit:{key}:{window}"
        pipe = self._client.pipeline()
        pipe.incr(name)
        pipe.expire(name, WINDOW_SECONDS * 2)
        count, _ = pipe.execute()
        return int(count)


@functools.cache
def _counter(broker_url: str) -> MemoryCounter | RedisCounter:
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisCounter(broker_url)
    return MemoryCounter()


def hit(team_id: str, key_id: str, limit: int, *, now: float | None = None) -> Decision:
    """Count one request of ``key_id`` and say whether it is within ``limit`` per minute."""
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    counter = _counter(get_settings().resolved_broker_url)
    try:
        count = counter.hit(f"{team_id}:{key_id}", window)
    except Exception as exc:  # fail open; see the module docstring
        log.warning("rate_limit_backend_unavailable", error=type(exc).__name__)
        return Decision(True, limit, limit, 0)
    if count <= limit:
        return Decision(True, limit, limit - count, 0)
    retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
    return Decision(False, limit, 0, retry_after)
