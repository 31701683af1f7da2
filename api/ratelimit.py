"""Rate limits at the API's edge: a request over its key's limit is refused before it costs
a database query, a thread or a body read.

The request middleware calls :func:`precheck` on the event loop for every ``/v1`` request
that presents a bearer token. The token's digest (the HMAC the key lookup uses) names the
key without the database once this process has authenticated it before, so:

- a known key is counted against its per-minute limit right there (one Redis call); a key
  refused is remembered until its window frees a slot (refused requests are not logged,
  so none can be accepted before then), and the rest of its flood costs no Redis call;
- a digest that failed authentication (unknown, revoked) is answered 401 from memory;
- an unknown digest from an address that already presented ``LOOKUPS_PER_ADDRESS`` unknown
  digests in the last minute is refused (429) without a lookup: random well-formed keys
  cannot cost a query each, and they never touch a real key's budget, which is keyed by
  team and key.

Everything else goes through the auth dependency, which looks the key up, remembers it and
counts the request if the pre-check could not. A team's limit is read from the database at
most every ``_LIMIT_CACHE_SECONDS`` (the pre-check uses the last value read), so an
operator's change lands within seconds without a query per request.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from sqlmodel import Session
from starlette.responses import JSONResponse
from starlette.types import Scope

from service.config import get_settings
from service.errors import FtqError, RateLimited, Unauthenticated
from service.tenants import keys, ratelimit
from service.tenants.limits import effective_limits
from service.tenants.service import Principal

log = structlog.get_logger(__name__)

# A team's per-minute figure is re-read this often, so an operator's change lands quickly
# without a query on every request.
_LIMIT_CACHE_SECONDS = 5.0
# Unknown well-formed digests one client address may have looked up per minute; past it,
# digests this process does not know are refused without a lookup until the minute frees
# one. Generous for people mistyping keys, tiny for a flood (each lookup is also audited).
LOOKUPS_PER_ADDRESS = 30
# Missing or malformed keys cost no lookup, only their audit row: at most this many are
# audited per address per minute (the rest are answered 401 all the same, and logged).
AUDITS_PER_ADDRESS = 60
# A refused digest is answered from memory this long: keys are random, so an unknown digest
# does not become a key later, and a revoked key stays revoked.
_REFUSED_TOKEN_SECONDS = 600.0
_MAX_ENTRIES = 50_000  # per cache; each is cleared when full, so a flood cannot grow them

_STATE = "ftq_ratelimit"  # scope["state"] entry the pre-check leaves for the dependency


@dataclass(frozen=True)
class _Identity:
    team_id: str
    key_id: str


@dataclass
class Checked:
    """What the pre-check learnt about a request's key."""

    digest: str
    decision: ratelimit.Decision | None = None  # set when the request was already counted


_lock = threading.Lock()
_limits: dict[str, tuple[float, int]] = {}  # team id -> (expires, requests per minute)
_identities: dict[str, _Identity] = {}  # digest -> key, for keys authenticated before
_refused: dict[str, tuple[float, str, str | None]] = {}  # digest -> (expires, message, code)
# bucket -> (monotonic time a slot frees, time the whole budget is back, the refusal)
_blocked: dict[str, tuple[float, float, ratelimit.Decision]] = {}


def _put(cache: dict[str, Any], key: str, value: Any) -> None:
    with _lock:
        if len(cache) >= _MAX_ENTRIES:
            cache.clear()
        cache[key] = value


def _requests_per_minute(session: Session, team_id: str) -> int:
    now = time.monotonic()
    cached = _limits.get(team_id)
    if cached and cached[0] > now:
        return cached[1]
    value = effective_limits(session, team_id).requests_per_minute
    _put(_limits, team_id, (now + _LIMIT_CACHE_SECONDS, value))
    return value


def headers(decision: ratelimit.Decision) -> dict[str, str]:
    """OpenAI's rate-limit headers (and Retry-After on a refusal)."""
    out = {
        "x-ratelimit-limit-requests": str(decision.limit),
        "x-ratelimit-remaining-requests": str(decision.remaining),
        "x-ratelimit-reset-requests": _duration(decision.reset_seconds),
    }
    if not decision.allowed:
        out["Retry-After"] = str(decision.retry_after)
    return out


def _duration(seconds: float) -> str:
    # OpenAI writes durations as "1s", "6m0s", "20ms".
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{text}s" if minutes else f"{text}s"


def _refusal(decision: ratelimit.Decision) -> RateLimited:
    return RateLimited(
        f"Rate limit reached for this API key: {decision.limit} requests per minute. "
        f"Try again in {decision.retry_after}s.",
        headers=headers(decision),
    )


def _remember_refusal(bucket: str, decision: ratelimit.Decision) -> None:
    if not decision.allowed and decision.counted:
        now = time.monotonic()
        entry = (now + decision.wait_seconds, now + decision.reset_seconds, decision)
        _put(_blocked, bucket, entry)


def _blocked_now(bucket: str) -> ratelimit.Decision | None:
    entry = _blocked.get(bucket)
    if entry is None:
        return None
    frees_at, reset_at, decision = entry
    now = time.monotonic()
    if frees_at <= now:
        _blocked.pop(bucket, None)
        return None
    wait = frees_at - now
    return ratelimit.Decision(
        False, decision.limit, 0, max(1, math.ceil(wait)), wait, max(wait, reset_at - now)
    )


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _error(exc: FtqError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


async def precheck(scope: Scope) -> JSONResponse | None:
    """Refuse the request here if its key is over its limit or its token is known to fail;
    ``None`` lets it through to authentication."""
    if not scope["path"].startswith("/v1/"):
        return None
    token = _bearer(scope)
    if not token or not keys.looks_like_key(token):
        return None  # answered 401 by the dependency, which needs no lookup for these
    digest = keys.hash_key(token, get_settings().secret_key.get_secret_value())
    checked = Checked(digest)
    _state(scope)[_STATE] = checked
    identity = _identities.get(digest)
    if identity is not None:
        limit = _limits.get(identity.team_id)
        if limit is None:
            return None  # not read yet in this process: the dependency reads it and counts
        bucket = ratelimit.key_bucket(identity.team_id, identity.key_id)
        decision = _blocked_now(bucket) or await ratelimit.adecide(bucket, limit[1])
        checked.decision = decision
        if decision.allowed:
            return None
        _remember_refusal(bucket, decision)
        structlog.contextvars.bind_contextvars(team_id=identity.team_id, key_id=identity.key_id)
        return _error(_refusal(decision))
    refused = _refused.get(digest)
    if refused is not None and refused[0] > time.monotonic():
        return _error(Unauthenticated(refused[1], code=refused[2]))
    lookups = await ratelimit.adecide(_lookup_bucket(scope), LOOKUPS_PER_ADDRESS, peek=True)
    if lookups.allowed:
        return None
    return _error(
        RateLimited(
            "Too many requests with unknown API keys from this address. "
            f"Try again in {lookups.retry_after}s.",
            headers={"Retry-After": str(lookups.retry_after)},
        )
    )


def _lookup_bucket(scope: Scope) -> str:
    return f"address:{_address(scope)}:unknown_keys"


def checked(scope: Scope) -> Checked | None:
    found: Checked | None = scope.get("state", {}).get(_STATE)
    return found


def enforce(session: Session, principal: Principal, checked: Checked | None = None) -> None:
    """Count this request against the key unless the pre-check did; 429 with Retry-After
    once the window is spent. Also remembers the key for the next pre-check."""
    limit = _requests_per_minute(session, principal.team_id)
    if checked is not None:
        _put(_identities, checked.digest, _Identity(principal.team_id, principal.key_id))
        if checked.decision is not None:
            return  # counted (and allowed) before authentication
    bucket = ratelimit.key_bucket(principal.team_id, principal.key_id)
    decision = _blocked_now(bucket) or ratelimit.hit(principal.team_id, principal.key_id, limit)
    if checked is not None:
        checked.decision = decision
    if not decision.allowed:
        _remember_refusal(bucket, decision)
        raise _refusal(decision)


def authentication_failed(scope: Scope, error: Unauthenticated) -> bool:
    """Note a refused token; True when the failure should be audited (in the database)."""
    found = checked(scope)
    if found is None:  # missing or malformed: no lookup was made, only the audit row costs
        bucket = f"address:{_address(scope)}:failed_auth_audits"
        if ratelimit.decide(bucket, AUDITS_PER_ADDRESS).allowed:
            return True
        log.warning("auth_failure_not_audited", reason="address_over_audit_budget")
        return False
    with _lock:
        _identities.pop(found.digest, None)
    _put(
        _refused,
        found.digest,
        (time.monotonic() + _REFUSED_TOKEN_SECONDS, error.message, error.code),
    )
    ratelimit.decide(_lookup_bucket(scope), LOOKUPS_PER_ADDRESS)
    return True  # once per digest: its next presentations are answered from memory


def response_headers(scope: Scope) -> dict[str, str]:
    """The rate-limit headers for a request whose key was counted (none otherwise)."""
    found = checked(scope)
    if found is None or found.decision is None or not found.decision.counted:
        return {}
    return headers(found.decision)
