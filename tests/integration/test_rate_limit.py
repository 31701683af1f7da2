"""The per-key rate limit against real Redis and a real API process: a sliding window that no
60-s span exceeds, OpenAI's headers, a refusal made before the key is looked up, and floods
of unknown or malformed keys that cost neither a real key's budget nor a query each.

Each flood comes from its own loopback address (127.0.0.x), so the per-address budgets it
spends do not touch the other tests, which call from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import bisect
import http.client
import json
import math
import random
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from api.ratelimit import AUDITS_PER_ADDRESS, LOOKUPS_PER_ADDRESS
from service.tenants import ratelimit
from service.tenants.keys import generate_key
from tests.integration.stack import Stack, Team
from tests.integration.test_keys_and_audit import audit_rows


@pytest.fixture(scope="module")
def limited() -> Iterator[Stack]:
    """An API of its own (no worker needed): its caches and Redis database start empty."""
    stack = Stack("ratelimit")
    try:
        stack.start(workers=0, beat=False)
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def _team(stack: Stack, requests_per_minute: int | None = None) -> Team:
    team = stack.create_team("rl")
    if requests_per_minute is not None:

        def limit(session: Any) -> None:
            from service.tenants import limits

            limits.set_overrides(session, team.id, {"requests_per_minute": requests_per_minute})

        stack.db(limit)
    return team


def get(
    stack: Stack, path: str, key: str | None, source: str = "127.0.0.1"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, lower-cased headers) of a GET sent from the loopback address ``source``."""
    url = urlsplit(stack.api_url)
    connection = http.client.HTTPConnection(
        url.hostname or "127.0.0.1", url.port, timeout=15, source_address=(source, 0)
    )
    try:
        headers = {"authorization": f"Bearer {key}"} if key is not None else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        got = {name.lower(): value for name, value in response.getheaders()}
        return response.status, json.loads(raw) if raw else {}, got
    finally:
        connection.close()


def _openai_error(body: dict[str, Any], type_: str, code: str) -> None:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (type_, code), error
    assert error["message"]


def _accepted_in_spans(accepted: list[float], limit: int) -> None:
    for t in accepted:  # every span (t - 60, t] that ends at an acceptance
        in_window = bisect.bisect_right(accepted, t) - bisect.bisect_right(accepted, t - 60)
        assert in_window <= limit, t


def test_redis_window_never_accepts_more_than_the_limit(limited: Stack) -> None:
    # Two clients, as two API replicas would be, share one bucket; the clock is controlled.
    url = limited.env["FTQ_BROKER_URL"]
    replicas = [ratelimit.RedisLog(url), ratelimit.RedisLog(url)]
    bucket, limit, rng = f"test:{uuid.uuid4().hex}", 5, random.Random(11)
    times = sorted(rng.uniform(0, 600) for _ in range(1500))
    accepted = [t for i, t in enumerate(times) if replicas[i % 2].decide(bucket, limit, t).allowed]
    _accepted_in_spans(accepted, limit)
    for t in sorted(set(times) - set(accepted)):  # refused only with a full window behind it
        in_window = bisect.bisect_right(accepted, t) - bisect.bisect_right(accepted, t - 60)
        assert in_window == limit, t
    # A clock-minute boundary gives no second budget (the old fixed window's 2x).
    edge = f"test:{uuid.uuid4().hex}"
    assert all(replicas[0].decide(edge, 3, 6000 - 0.5).allowed for _ in range(3))
    refused = replicas[1].decide(edge, 3, 6000 + 0.5)
    assert not refused.allowed and refused.retry_after == 59
    assert replicas[1].decide(edge, 3, 6000 + 0.5, peek=True).remaining == 0


def test_redis_clock_shared_by_the_event_loop_and_threads(limited: Stack) -> None:
    log, bucket = ratelimit.RedisLog(limited.env["FTQ_BROKER_URL"]), f"test:{uuid.uuid4().hex}"

    async def three() -> list[ratelimit.Decision]:
        return [await log.adecide(bucket, 3) for _ in range(3)]

    assert [d.remaining for d in asyncio.run(three())] == [2, 1, 0]
    refused = log.decide(bucket, 3)  # Redis's clock: the same window for both clients
    assert not refused.allowed and 0 < refused.wait_seconds <= 60 and refused.remaining == 0
    assert refused.retry_after == math.ceil(refused.wait_seconds)


def test_headers_then_429_in_openai_shape(limited: Stack) -> None:
    team = _team(limited, requests_per_minute=3)
    key = team.keys["member"]
    remaining = []
    for _ in range(3):
        status, _body, headers = get(limited, "/v1/files", key)
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(int(headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]

    for _ in range(2):  # refused by the pre-check, then from the remembered refusal
        status, body, headers = get(limited, "/v1/files", key)
        assert status == 429
        _openai_error(body, "rate_limit_error", "rate_limit_exceeded")
        assert 1 <= int(headers["retry-after"]) <= 60
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        assert "3 requests per minute" in body["error"]["message"]
    # Another key of the same team has its own budget.
    assert get(limited, "/v1/files", team.keys["viewer"])[0] == 200


def test_over_the_limit_is_refused_before_the_key_is_looked_up(limited: Stack) -> None:
    team = _team(limited, requests_per_minute=2)
    key = team.keys["member"]
    assert [get(limited, "/v1/files", key)[0] for _ in range(2)] == [200, 200]

    def revoke(session: Any) -> None:
        from service.tenants.service import revoke_key

        revoke_key(session, team.id, team.key_ids["member"])

    limited.db(revoke)
    # A lookup would answer 401 revoked_api_key and audit it; the limit answers first.
    status, body, _ = get(limited, "/v1/files", key)
    assert status == 429, body
    assert not audit_rows(limited, action="auth.failed", actor_key_id=team.key_ids["member"])


def test_unknown_key_flood_costs_no_budget_and_a_bounded_number_of_lookups(
    limited: Stack,
) -> None:
    team, source = _team(limited), "127.0.0.41"
    key = team.keys["member"]
    status, _body, headers = get(limited, "/v1/files", key, source)
    assert status == 200
    before = int(headers["x-ratelimit-remaining-requests"])
    failures_before = len(audit_rows(limited, action="auth.failed"))

    garbage = [generate_key() for _ in range(LOOKUPS_PER_ADDRESS + 15)]
    answers = [get(limited, "/v1/files", token, source) for token in garbage]
    statuses = [status for status, _body, _headers in answers]
    # Each unknown digest is looked up until the address's budget is spent, then refused.
    assert statuses == [401] * LOOKUPS_PER_ADDRESS + [429] * 15
    _openai_error(answers[0][1], "authentication_error", "invalid_api_key")
    _openai_error(answers[-1][1], "rate_limit_error", "rate_limit_exceeded")
    assert 1 <= int(answers[-1][2]["retry-after"]) <= 60
    # A digest that already failed is answered from memory: 401 again, no lookup, no audit.
    assert {get(limited, "/v1/files", garbage[0], source)[0] for _ in range(10)} == {401}
    failures = len(audit_rows(limited, action="auth.failed")) - failures_before
    assert failures == LOOKUPS_PER_ADDRESS  # one per digest looked up, not one per request

    # The real key, from the same address: its budget spent only by its own requests.
    status, _body, headers = get(limited, "/v1/files", key, source)
    assert status == 200
    assert int(headers["x-ratelimit-remaining-requests"]) == before - 1


def test_malformed_key_flood_is_answered_but_audited_a_bounded_number_of_times(
    limited: Stack,
) -> None:
    source = "127.0.0.42"
    failures_before = len(audit_rows(limited, action="auth.failed"))
    tokens = [None, "ftq_sk_notakey", "sk-proj-abc"] * ((AUDITS_PER_ADDRESS + 30) // 3)
    answers = [get(limited, "/v1/files", token, source) for token in tokens]
    assert {status for status, _body, _headers in answers} == {401}
    _openai_error(answers[0][1], "authentication_error", "missing_api_key")
    _openai_error(answers[1][1], "authentication_error", "invalid_api_key")
    failures = len(audit_rows(limited, action="auth.failed")) - failures_before
    assert failures == AUDITS_PER_ADDRESS
