"""Request rate limits: a sliding window over a log of accepted requests.

A bucket (one API key, keyed by team and key; or one client address's budget of failed
authentications) accepts a request while fewer than ``limit`` requests were accepted in the
last ``WINDOW_SECONDS``; refused requests are not recorded. So no span of 60 s ever accepts
more than ``limit`` requests of one bucket, with no burst allowance on top, and a client that
keeps calling past its limit is let in again as soon as its oldest accepted request leaves
the window. (The fixed clock-minute window this replaces accepted up to twice the limit
across a minute boundary.)

With Redis as the broker each decision is one atomic Lua call on a sorted set (trim, count,
add), timed by Redis's own clock, so every API replica shares a bucket and their clocks do
not matter; a bucket holds at most ``limit`` entries and expires a window after its last
accepted request. Otherwise (the embedded default: one API process) the logs live in this
process. Buckets are prefixed with the team (OWASP multi-tenant cheat sheet).

If Redis is unreachable the limiter lets requests through: the broker being down is
reported by /readyz, and refusing every request would turn a degraded broker into a full
outage. After a failure Redis is left alone for ``BACKOFF_SECONDS`` so that an unreachable
Redis costs one timeout per process per back-off, not one per request.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog

from service.config import get_settings

log = structlog.get_logger(__name__)

WINDOW_SECONDS = 60
BACKOFF_SECONDS = 5.0
_MICROS = 1_000_000
_REDIS_TIMEOUT_SECONDS = 0.5

# KEYS[1]: the bucket's log (member: a unique id per accepted request, score: microseconds).
# ARGV: limit, window (us), now (us; negative = Redis's clock), member, peek ("1": decide
# without recording). Returns {allowed, count, now, free_at, newest}: free_at is when the
# entry whose expiry lets one more request in was accepted (the oldest one unless the limit
# was lowered), newest the latest accepted request (the whole budget is back a window later).
_SLIDING_LOG = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  allowed = 1
  if ARGV[5] ~= '1' then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
    count = count + 1
  end
end
local free_at, newest = now, now
if count >= limit and count > 0 then
  free_at = tonumber(redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')[2])
end
if count > 0 then
  newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
end
return {allowed, count, now, free_at, newest}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until one more request is accepted (0 when allowed)
    wait_seconds: float  # the same, exactly
    reset_seconds: float  # until the window holds no accepted request (the whole budget back)
    counted: bool = True  # False when the backend was unavailable and the request let through

    @staticmethod
    def from_log(
        allowed: bool, limit: int, count: int, now: float, free_at: float, newest: float
    ) -> Decision:
        """Build a decision from a log's figures (all times in seconds)."""
        wait = 0.0 if allowed else max(0.0, free_at + WINDOW_SECONDS - now)
        reset = max(0.0, newest + WINDOW_SECONDS - now) if count else 0.0
        return Decision(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - count),
            retry_after=0 if allowed else max(1, math.ceil(wait)),
            wait_seconds=wait,
            reset_seconds=reset,
        )


def _unlimited(limit: int) -> Decision:
    return Decision(True, limit, limit, 0, 0.0, 0.0, counted=False)


class MemoryLog:
    """Sliding-window logs for one process (the embedded default has a single API process)."""

    _MAX_BUCKETS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[str, list[float]] = {}

    def decide(self, bucket: str, limit: int, now: float, *, peek: bool = False) -> Decision:
        with self._lock:
            entries = self._logs.get(bucket, [])
            del entries[: bisect.bisect_right(entries, now - WINDOW_SECONDS)]
            allowed = len(entries) < limit
            if allowed and not peek:
                bisect.insort(entries, now)
            if entries:
                self._logs[bucket] = entries
                if len(self._logs) > self._MAX_BUCKETS:  # bounded under any flood of buckets
                    horizon = now - WINDOW_SECONDS
                    self._logs = {k: v for k, v in self._logs.items() if v and v[-1] > horizon}
            else:
                self._logs.pop(bucket, None)
            count = len(entries)
            free_at = entries[count - limit] if count >= limit and count else now
            newest = entries[-1] if entries else now
        return Decision.from_log(allowed, limit, count, now, free_at, newest)


class RedisLog:
    """Sliding-window logs in Redis, one Lua call per decision; sync and asyncio clients."""

    def __init__(self, url: str) -> None:
        import redis

        self._url = url
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
        )
        self._script = self._client.register_script(_SLIDING_LOG)
        # redis.asyncio connections belong to the event loop that opened them.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def _args(limit: int, now: float | None, peek: bool) -> list[Any]:
        now_us = -1 if now is None else int(now * _MICROS)
        return [limit, WINDOW_SECONDS * _MICROS, now_us, os.urandom(9).hex(), "1" if peek else "0"]

    @staticmethod
    def _decision(limit: int, reply: list[Any]) -> Decision:
        allowed, count, now, free_at, newest = (int(v) for v in reply)
        return Decision.from_log(
            bool(allowed), limit, count, now / _MICROS, free_at / _MICROS, newest / _MICROS
        )

    def decide(
        self, bucket: str, limit: int, now: float | None = None, *, peek: bool = False
    ) -> Decision:
        reply = self._script(keys=[_redis_key(bucket)], args=self._args(limit, now, peek))
        return self._decision(limit, cast(list[Any], reply))

    async def adecide(self, bucket: str, limit: int, *, peek: bool = False) -> Decision:
        loop = asyncio.get_running_loop()
        script = self._async.get(loop)
        if script is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=_REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
            )
            script = self._async[loop] = client.register_script(_SLIDING_LOG)
        call = cast(Callable[..., Awaitable[Any]], script)
        reply = await call(keys=[_redis_key(bucket)], args=self._args(limit, None, peek))
        return self._decision(limit, reply)


def _redis_key(bucket: str) -> str:
    return f"ftq:ratelimit:{bucket}"


@functools.cache
def _backend(broker_url: str) -> MemoryLog | RedisLog:
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisLog(broker_url)
    return MemoryLog()


class _Breaker:
    """Skips an unavailable backend for a while (see the module docstring)."""

    def __init__(self) -> None:
        self.open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self, exc: BaseException) -> None:
        self.open_until = time.monotonic() + BACKOFF_SECONDS
        log.warning(
            "rate_limit_backend_unavailable",
            error=type(exc).__name__,
            retry_in_seconds=BACKOFF_SECONDS,
        )


_breaker = _Breaker()


def key_bucket(team_id: str, key_id: str) -> str:
    return f"{team_id}:{key_id}"


def decide(bucket: str, limit: int, *, now: float | None = None, peek: bool = False) -> Decision:
    """Count one request in ``bucket`` (unless ``peek``) and say whether it is within
    ``limit`` per window. ``now`` (seconds) replaces the backend's clock, for tests."""
    backend = _backend(get_settings().resolved_broker_url)
    if isinstance(backend, MemoryLog):
        return backend.decide(bucket, limit, time.time() if now is None else now, peek=peek)
    if _breaker.is_open():
        return _unlimited(limit)
    try:
        return backend.decide(bucket, limit, now, peek=peek)
    except Exception as exc:  # fail open; see the module docstring
        _breaker.trip(exc)
        return _unlimited(limit)


async def adecide(bucket: str, limit: int, *, peek: bool = False) -> Decision:
    """``decide`` for the event loop: the Redis call does not take a thread."""
    backend = _backend(get_settings().resolved_broker_url)
    if isinstance(backend, MemoryLog):
        return backend.decide(bucket, limit, time.time(), peek=peek)
    if _breaker.is_open():
        return _unlimited(limit)
    try:
        return await backend.adecide(bucket, limit, peek=peek)
    except Exception as exc:  # fail open; see the module docstring
        _breaker.trip(exc)
        return _unlimited(limit)


def hit(team_id: str, key_id: str, limit: int, *, now: float | None = None) -> Decision:
    """Count one request of ``key_id`` and say whether it is within ``limit`` per minute."""
    return decide(key_bucket(team_id, key_id), limit, now=now)
