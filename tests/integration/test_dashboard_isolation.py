"""Every dashboard route, signed in as each of team B's roles, with team A's ids.

The routes and the expected answers are the dashboard entries of the isolation matrix's
``EXPECTED`` (a route missing there fails ``test_every_route_has_an_expectation``): A's
objects are 404 pages exactly like missing ones, B's own listings never show A's ids, writes
need the role and the CSRF token, and nothing of A's changes.
"""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from tests.integration.conftest import CHAT_EXAMPLES, write_chat_dataset
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_isolation_matrix import DASHBOARD, EXPECTED, _fill, _seed_eval
from tests.integration.test_keys_and_audit import call

pytestmark = pytest.mark.integration

SIGN_IN_FREE = {"/dashboard", "/dashboard/login", "/dashboard/logout"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _session(stack: Stack, key: str) -> tuple[httpx2.Client, str]:
    browser = httpx2.Client(base_url=stack.api_url, timeout=15, follow_redirects=True)
    answer = browser.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/jobs"})
    assert answer.status_code == 200, answer.text[:300]  # followed the 303 to the jobs page
    found = CSRF.search(answer.text)
    assert found, "no CSRF token on the signed-in page"
    return browser, found.group(1)


def _seed(stack: Stack, a: Team, tmp: Any) -> dict[str, str]:
    admin = a.keys["admin"]
    client = stack.client(admin)
    dataset = write_chat_dataset(tmp / "a.jsonl", CHAT_EXAMPLES)
    with dataset.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    status, endpoint, _ = call(
        stack, "POST", "/v1/webhook_endpoints", admin, {"url": "http://127.0.0.1:9/hook"}
    )
    assert status == 200, endpoint
    status, delivery, _ = call(stack, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/test", admin)
    assert status == 200, delivery
    return {
        "file_id": file_id,
        "job_id": job.id,
        "endpoint_id": endpoint["id"],
        "delivery_id": delivery["id"],
        "rest": "no-such-page",
        **_seed_eval(stack, a),
    }


def _delivery_state(stack: Stack, a: Team, ids: dict[str, str]) -> tuple[Any, ...]:
    path = f"/v1/webhook_endpoints/{ids['endpoint_id']}/deliveries/{ids['delivery_id']}"
    delivery = call(stack, "GET", path, a.keys["admin"])[1]
    attempts = call(stack, "GET", path + "/attempts", a.keys["admin"])[1]["data"]
    return delivery["status"], len(attempts)


def test_team_b_sees_none_of_team_a_in_the_dashboard(
    stack: Stack, team: Team, other_team: Team, tmp_path: Any
) -> None:
    a, b = team, other_team
    ids = _seed(stack, a, tmp_path)
    # Let A's test delivery settle (its one attempt), so "nothing changed" is a fixed point.
    deliveries = f"/v1/webhook_endpoints/{ids['endpoint_id']}/deliveries/{ids['delivery_id']}"
    wait_for(
        lambda: call(stack, "GET", deliveries, a.keys["admin"])[1]["status"] != "pending",
        timeout=30,
        what="A's test delivery to settle",
    )
    before = _delivery_state(stack, a, ids)
    routes = {k: v for k, v in EXPECTED.items() if k[1].startswith(DASHBOARD)}
    assert len(routes) >= 15
    checked = 0

    for role in ("admin", "member", "viewer"):
        browser, csrf = _session(stack, b.keys[role])
        try:
            for (method, template), expect in sorted(routes.items()):
                if template in SIGN_IN_FREE or role not in expect.statuses:
                    continue
                path = _fill(template, ids)
                data = {"csrf_token": csrf} if method == "POST" else None
                answer = browser.request(method, path, data=data)
                where = (method, template, role)
                assert answer.status_code == expect.statuses[role], (*where, answer.text[:300])
                assert "Traceback" not in answer.text
                checked += 1
                if expect.listing:
                    assert not any(v in answer.text for k, v in ids.items() if k != "rest"), where
                if answer.status_code == 404:
                    # A's id answers like a missing one: same page with the other id in it.
                    missing = {k: v[:-6] + "zzzzzz" for k, v in ids.items()}
                    again = browser.request(method, _fill(template, missing), data=data)
                    assert again.status_code == 404, where
                    assert _strip_ids(again.text, missing) == _strip_ids(answer.text, ids), where
                # Without a session: the sign-in page (JSON routes: OpenAI's 401 shape).
                anonymous = httpx2.request(method, stack.api_url + path, data=data, timeout=15)
                assert anonymous.status_code == 401, where
                if template.endswith(".json"):
                    assert anonymous.json()["error"]["type"] == "authentication_error"
                else:
                    assert 'id="sign-in"' in anonymous.text
            # A POST without the session's CSRF token is refused before anything runs.
            forged = browser.post(f"/dashboard/jobs/{ids['job_id']}/cancel", data={})
            assert forged.status_code == 403
        finally:
            browser.close()

    assert checked == 3 * len([t for _m, t in routes if t not in SIGN_IN_FREE])  # all ran
    # Nothing of A's changed: no replay of its delivery, and its job was not cancelled.
    assert _delivery_state(stack, a, ids) == before
    client = stack.client(a.keys["admin"])
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(ids["job_id"]).status == "succeeded",
        timeout=90,
        what="A's job to finish uncancelled",
    )

    def audits(session: Any) -> list[Any]:
        from sqlmodel import select

        from service.tenants.models import AuditEvent

        return list(session.exec(select(AuditEvent).where(AuditEvent.team_id == a.id)))

    # B's probes are audited in B's team only; A's log shows none of them.
    assert not [e for e in stack.db(audits) if e.action in ("access.not_found", "access.denied")]


def _strip_ids(text: str, ids: dict[str, str]) -> str:
    for value in ids.values():
        text = text.replace(value, "<id>")
    return re.sub(r'name="csrf_token" value="[^"]+"', "", text)


def test_an_operator_key_opens_no_dashboard(stack: Stack) -> None:
    from tests.integration.test_keys_and_audit import operator_key

    answer = httpx2.post(
        f"{stack.api_url}/dashboard/login",
        data={"api_key": operator_key(stack), "next": "/dashboard/jobs"},
        timeout=15,
    )
    assert answer.status_code == 400 and "team key" in answer.text
    assert "ftq_dashboard" not in answer.headers.get("set-cookie", "")
