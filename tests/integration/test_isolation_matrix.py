"""BOLA matrix over EVERY route of the app (reliability.md B6.13).

Team B (each role) and an operator call every route with team A's ids. Expected: the role's
403 where the role may not use the route, otherwise 404 (never 200, never 403) for A's
objects — exactly what a missing id gets — 400 where A's id travels in the body, no 401
without a key; and afterwards the database holds exactly what it held before (only failure
audits were added, each with B's key), nothing was enqueued and nothing reached the
upstream. ``EXPECTED`` is keyed by (method, path): a new route without an entry fails here.

The stack is private and runs no worker or beat, so nothing in the background can change
a row or call the sandbox while the matrix runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.conftest import write_chat_dataset
from tests.integration.stack import Stack, Team
from tests.integration.test_auth_and_isolation import assert_openai_error
from tests.integration.test_keys_and_audit import call, operator_key

ROLES = ("admin", "member", "viewer", "operator")
READ = {"admin": 404, "member": 404, "viewer": 404, "operator": 403}
WRITE = {"admin": 404, "member": 404, "viewer": 403, "operator": 403}
ADMIN = {"admin": 404, "member": 403, "viewer": 403, "operator": 403}
OPERATOR_ONLY = {"admin": 403, "member": 403, "viewer": 403}
LIST = {"admin": 200, "member": 200, "viewer": 200, "operator": 403}
ADMIN_LIST = {"admin": 200, "member": 403, "viewer": 403, "operator": 403}
# Routes that must answer without a key; anything else under /v1 must answer 401.
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


@dataclass(frozen=True)
class Expect:
    statuses: dict[str, int]  # B's role -> status; a role not listed is not called
    body: Any = None
    # True for the caller's own collection: 200 is right, but A's ids must not appear.
    listing: bool = False
    note: str = ""


_file = "/v1/files/{file_id}"
_job = "/v1/fine_tuning/jobs/{job_id}"
_endpoint = "/v1/webhook_endpoints/{endpoint_id}"
_delivery = _endpoint + "/deliveries/{delivery_id}"
_eval = "/v1/evals/{eval_id}"
_run = _eval + "/runs/{run_id}"
_judged = {
    "grader": {
        "type": "score_model",
        "name": "judge",
        "model": "{model_id}",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    },
    "model_sample": "x",
}
_dash, _job_page = "/dashboard", "/jobs/{job_id}"
DASHBOARD = "/dashboard"  # cookie-session routes, checked in test_dashboard_isolation.py

EXPECTED: dict[tuple[str, str], Expect] = {
    # files
    ("GET", "/v1/files"): Expect(LIST, listing=True),
    ("POST", "/v1/files"): Expect(
        {"admin": 400, "member": 400, "viewer": 403, "operator": 403},
        body={"file": "x"},
        note="a body that is not an upload: refused before anything is stored",
    ),
    ("GET", _file): Expect(READ),
    ("DELETE", _file): Expect(WRITE),
    ("GET", _file + "/content"): Expect(READ),
    ("GET", _file + "/validation"): Expect(READ),
    ("GET", _file + "/sample"): Expect(READ),
    ("POST", _file + "/split"): Expect(WRITE, body={}),
    ("POST", _file + "/convert"): Expect(WRITE, body={}),
    # fine-tuning jobs
    ("GET", "/v1/fine_tuning/jobs"): Expect(LIST, listing=True),
    ("POST", "/v1/fine_tuning/jobs"): Expect(
        {"admin": 400, "member": 400, "viewer": 403, "operator": 403},
        body={"model": "gpt-4o-mini-2024-07-18", "training_file": "{file_id}"},
        note="A's file id in the body: OpenAI's 400 'invalid training_file', as for a missing one",
    ),
    ("POST", "/v1/fine_tuning/jobs/estimate"): Expect(
        {"admin": 400, "member": 400, "viewer": 400, "operator": 403},
        body={"model": "gpt-4o-mini-2024-07-18", "training_file": "{file_id}"},
    ),
    ("GET", _job): Expect(READ),
    ("POST", _job + "/cancel"): Expect(WRITE),
    ("POST", _job + "/pause"): Expect(WRITE),
    ("POST", _job + "/resume"): Expect(WRITE),
    ("GET", _job + "/events"): Expect(READ),
    ("GET", _job + "/checkpoints"): Expect(READ),
    # models and inference
    ("GET", "/v1/models"): Expect(LIST, listing=True),
    ("GET", "/v1/models/{model_id}"): Expect(READ),
    # the registry's plan: B's own (empty) plan, never A's models
    ("GET", "/v1/migration_plan"): Expect(LIST, listing=True),
    ("POST", "/v1/chat/completions"): Expect(
        {"admin": 404, "member": 404, "viewer": 403, "operator": 403},
        body={"model": "{model_id}", "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("POST", "/v1/completions"): Expect(
        {"admin": 404, "member": 404, "viewer": 403, "operator": 403},
        body={"model": "{model_id}", "prompt": "hi"},
    ),
    # evals: A's evals, runs and items answer 404; A's model as a judge is the 400 of a
    # missing model; A's file for a template is the 400 of a missing file
    ("GET", "/v1/evals"): Expect(LIST, listing=True),
    ("POST", "/v1/evals"): Expect(
        {"admin": 400, "member": 400, "viewer": 403, "operator": 403},
        body={"testing_criteria": []},
    ),
    ("GET", "/v1/evals/templates"): Expect(LIST, listing=True),
    ("POST", "/v1/evals/templates"): Expect(
        {"admin": 400, "member": 400, "viewer": 403, "operator": 403},
        body={"template": "question_answering", "file_id": "{file_id}"},
    ),
    ("GET", _eval): Expect(READ),
    ("POST", _eval): Expect(WRITE, body={"name": "taken over"}),
    ("DELETE", _eval): Expect(WRITE),
    ("GET", _eval + "/runs"): Expect(READ),
    ("POST", _eval + "/runs"): Expect(
        WRITE, body={"data_source": {"type": "jsonl", "source": {"type": "file_content"}}}
    ),
    ("GET", _run): Expect(READ),
    ("POST", _run): Expect(WRITE),
    ("POST", _run + "/cancel"): Expect(WRITE),
    ("DELETE", _run): Expect(WRITE),
    ("GET", _run + "/output_items"): Expect(READ),
    ("GET", _run + "/output_items/{output_item_id}"): Expect(READ),
    ("POST", "/v1/fine_tuning/alpha/graders/run"): Expect(
        {"admin": 400, "member": 400, "viewer": 403, "operator": 403}, body=_judged
    ),
    ("POST", "/v1/fine_tuning/alpha/graders/validate"): Expect(
        {"admin": 400, "member": 400, "viewer": 400, "operator": 403}, body=_judged
    ),
    ("GET", _job + "/evaluation"): Expect(READ),
    # usage and budget: always the caller's own team
    ("GET", "/v1/usage"): Expect(LIST, listing=True),
    ("GET", "/v1/budget"): Expect(LIST, listing=True),
    ("PUT", "/v1/budget"): Expect(
        {"admin": 400, "member": 403, "viewer": 403, "operator": 403},
        body={"monthly_budget_usd": -1},
        note="a refused value: nothing changes even for the caller's own team",
    ),
    # webhooks
    ("GET", "/v1/webhook_endpoints"): Expect(LIST, listing=True),
    ("POST", "/v1/webhook_endpoints"): Expect(
        {"admin": 400, "member": 403, "viewer": 403, "operator": 403},
        body={"url": "not a url"},
    ),
    ("GET", "/v1/webhook_endpoints/notices"): Expect(LIST, listing=True),
    ("GET", _endpoint): Expect(READ),
    ("POST", _endpoint): Expect(ADMIN, body={"description": "taken over"}),
    ("PATCH", _endpoint): Expect(ADMIN, body={"description": "taken over"}),
    ("DELETE", _endpoint): Expect(ADMIN),
    ("GET", _endpoint + "/secret"): Expect(ADMIN),
    ("POST", _endpoint + "/rotate_secret"): Expect(ADMIN),
    ("GET", _endpoint + "/deliveries"): Expect(READ),
    ("GET", _delivery): Expect(READ),
    ("GET", _delivery + "/attempts"): Expect(READ),
    ("POST", _delivery + "/replay"): Expect(ADMIN),
    ("POST", _endpoint + "/recover"): Expect(ADMIN, body={"since": 0}),
    ("POST", _endpoint + "/test"): Expect(ADMIN),
    # API keys
    ("GET", "/v1/api_keys"): Expect(ADMIN_LIST, listing=True),
    ("POST", "/v1/api_keys"): Expect(
        {"admin": 400, "member": 403, "viewer": 403, "operator": 403}, body={"role": "root"}
    ),
    ("GET", "/v1/api_keys/{key_id}"): Expect(ADMIN),
    ("DELETE", "/v1/api_keys/{key_id}"): Expect(ADMIN),
    ("POST", "/v1/api_keys/{key_id}/revoke"): Expect(ADMIN),
    ("POST", "/v1/api_keys/{key_id}/rotate"): Expect(ADMIN, body={}),
    # provider credentials: the caller's own team only (B has none; A's stay unseen)
    ("GET", "/v1/provider_credentials"): Expect(ADMIN),
    ("PUT", "/v1/provider_credentials"): Expect(
        {"admin": 400, "member": 403, "viewer": 403, "operator": 403},
        body={"provider": "openai"},
    ),
    ("DELETE", "/v1/provider_credentials"): Expect(ADMIN),
    # audit log: the caller's own team only (checked separately: B's own failure audits
    # name A's ids as the targets B asked for)
    ("GET", "/v1/audit_events"): Expect(ADMIN_LIST),
    # operator routes: team keys 403; the operator's calls change nothing
    ("GET", "/v1/tenants"): Expect({**OPERATOR_ONLY, "operator": 200}),
    ("POST", "/v1/tenants"): Expect({**OPERATOR_ONLY, "operator": 400}, body={"name": ""}),
    ("GET", "/v1/tenants/{team_id}"): Expect({**OPERATOR_ONLY, "operator": 200}),
    ("PATCH", "/v1/tenants/{team_id}"): Expect(
        {**OPERATOR_ONLY, "operator": 400}, body={"limits": {"bogus": 1}}
    ),
    ("POST", "/v1/tenants/{team_id}/api_keys"): Expect(
        {**OPERATOR_ONLY, "operator": 400}, body={"role": "root"}
    ),
    # dashboard: cookie sessions, not keys; tests/integration/test_dashboard_isolation.py signs
    # in as each of B's roles and checks these (an operator key opens no dashboard session)
    ("GET", "/dashboard"): Expect({}, note="redirects to the jobs page"),
    ("GET", "/dashboard/login"): Expect({}),
    ("POST", "/dashboard/login"): Expect({}),
    ("POST", "/dashboard/logout"): Expect({}),
    ("GET", "/dashboard/jobs"): Expect(LIST, listing=True),
    ("GET", _dash + _job_page): Expect(READ),
    ("GET", _dash + _job_page + "/live.json"): Expect(READ),
    ("GET", _dash + _job_page + "/evaluation"): Expect(READ),
    ("POST", _dash + _job_page + "/cancel"): Expect(WRITE),
    ("GET", "/dashboard/files"): Expect(LIST, listing=True),
    ("GET", "/dashboard/files/{file_id}"): Expect(READ),
    ("GET", "/dashboard/models"): Expect(LIST, listing=True),
    ("GET", "/dashboard/webhooks"): Expect(LIST, listing=True),
    ("GET", "/dashboard/webhooks/{endpoint_id}"): Expect(READ),
    ("POST", "/dashboard/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay"): Expect(ADMIN),
    ("GET", "/dashboard/usage"): Expect(LIST, listing=True),
    ("GET", "/dashboard/evals"): Expect(LIST, listing=True),
    ("GET", "/dashboard/evals/{eval_id}"): Expect(READ),
    ("GET", "/dashboard/evals/{eval_id}/runs/{run_id}"): Expect(READ),
    ("GET", "/dashboard/{rest}"): Expect(READ, note="any other dashboard URL: a 404 page"),
    # public
    ("GET", "/healthz"): Expect({}),
    ("GET", "/readyz"): Expect({}),
    ("GET", "/metrics"): Expect({}),
    ("GET", "/openapi.json"): Expect({}),
    ("GET", "/docs"): Expect({}),
    ("GET", "/docs/oauth2-redirect"): Expect({}),
    ("GET", "/redoc"): Expect({}),
}


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened."""
    from api.main import app

    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if hasattr(route, "effective_route_contexts"):  # an included router
                walk(list(route.effective_route_contexts()))
            elif hasattr(route, "routes") and not hasattr(route, "methods"):
                walk(list(route.routes))
            else:
                path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
                for method in route.methods or ():
                    if method != "HEAD":
                        found.add((method, path))

    walk(list(app.routes))
    return found


@dataclass
class World:
    stack: Stack
    a: Team
    b: Team
    operator: str
    ids: dict[str, str] = field(default_factory=dict)  # path parameter -> A's id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    stack = Stack("matrix")
    try:
        stack.start(workers=0, beat=False)
        a, b = stack.create_team("victim"), stack.create_team("attacker")
        world = World(stack, a, b, operator_key(stack))
        world.ids = _seed_team_a(world, tmp_path_factory.mktemp("matrix"))
        yield world
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def _seed_team_a(world: World, folder: Any) -> dict[str, str]:
    stack, a = world.stack, world.a
    client = stack.client(a.keys["admin"])
    dataset = write_chat_dataset(folder / "train.jsonl")
    with dataset.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="fine-tune").id
    job_id = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=file_id
    ).id
    model_id = f"ft:gpt-4o-mini-2024-07-18:victim::{job_id[-8:]}"

    def finish(session: Any) -> None:
        # No worker runs here: mark the job done with a model, as the tracker would.
        from service.jobs.models import FineTuningJob

        job = session.get(FineTuningJob, job_id)
        job.fine_tuned_model, job.status, job.stage = model_id, "succeeded", "done"
        session.add(job)

    stack.db(finish)
    status, endpoint, _ = call(
        stack,
        "POST",
        "/v1/webhook_endpoints",
        a.keys["admin"],
        {"url": "http://127.0.0.1:9/hook"},
    )
    assert status == 200, endpoint
    status, delivery, _ = call(
        stack, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/test", a.keys["admin"]
    )
    assert status == 200, delivery
    status, credentials, _ = call(
        stack,
        "PUT",
        "/v1/provider_credentials",
        a.keys["admin"],
        {"api_key": "sk-victim-0123456789abcdef", "base_url": f"{stack.sandbox_url}/v1"},
    )
    assert status == 200, credentials
    eval_ids = _seed_eval(stack, a)
    return {
        **eval_ids,
        "file_id": file_id,
        "job_id": job_id,
        "model_id": model_id,
        "endpoint_id": endpoint["id"],
        "delivery_id": delivery["id"],
        "key_id": a.key_ids["admin"],
        "team_id": a.id,
    }


def _seed_eval(stack: Stack, a: Team) -> dict[str, str]:
    """A's eval, a run of it, and one output item (written as the run's worker would)."""
    item = {"question": "q", "answer": "a"}
    status, created, _ = call(
        stack,
        "POST",
        "/v1/evals",
        a.keys["admin"],
        {
            "data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
            "testing_criteria": [
                {
                    "type": "string_check",
                    "name": "exact",
                    "input": "{{item.question}}",
                    "reference": "{{item.answer}}",
                    "operation": "eq",
                }
            ],
        },
    )
    assert status == 200, created
    content = [{"item": item}]
    status, run, _ = call(
        stack,
        "POST",
        f"/v1/evals/{created['id']}/runs",
        a.keys["admin"],
        {"data_source": {"type": "jsonl", "source": {"type": "file_content", "content": content}}},
    )
    assert status == 200, run

    def write_item(session: Any) -> str:
        from service.evals.models import EvalOutputItem

        row = EvalOutputItem(
            id="outputitem_victim0000000000000000",
            run_id=run["id"],
            eval_id=created["id"],
            team_id=a.id,
            datasource_item_id=0,
            datasource_item=item,
            status="fail",
            results=[],
        )
        session.add(row)
        return row.id

    return {"eval_id": created["id"], "run_id": run["id"], "output_item_id": stack.db(write_item)}


def _fill(template: Any, ids: dict[str, str]) -> Any:
    text = json.dumps(template)
    for name, value in ids.items():
        text = text.replace("{" + name + "}", value)
    return json.loads(text)


def _database_digest(stack: Stack) -> dict[str, Any]:
    """Row count and content hash of every table; audit rows returned for inspection."""

    def snapshot(session: Any) -> dict[str, Any]:
        import sqlalchemy as sa
        from sqlmodel import SQLModel

        digest: dict[str, Any] = {}
        for name, table in sorted(SQLModel.metadata.tables.items()):
            columns = [
                c for c in table.columns if not (name == "api_keys" and c.name == "last_used_at")
            ]
            rows = session.execute(sa.select(*columns).order_by(*table.primary_key.columns)).all()
            if name in ("audit_events", "api_key_addresses"):
                digest[name] = [dict(r._mapping) for r in rows]
                continue
            text = json.dumps([list(r) for r in rows], default=str)
            digest[name] = (len(rows), hashlib.sha256(text.encode()).hexdigest())
        return digest

    return stack.db(snapshot)


def _broker_depth(stack: Stack) -> int:
    import redis

    from tests.integration.stack import REDIS_HOST, REDIS_PORT

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=stack.redis_db)
    return sum(int(client.llen(q)) for q in ("ftq", "training", "evals"))


def test_every_route_has_an_expectation() -> None:
    missing = sorted(app_routes() - set(EXPECTED))
    assert not missing, "routes without an isolation expectation (add them to EXPECTED): " + repr(
        missing
    )


def test_team_b_cannot_reach_team_a(world: World) -> None:
    stack, a, b = world.stack, world.a, world.b
    keys = {**b.keys, "operator": world.operator}
    key_ids = set(b.key_ids.values())
    # Warm up: each key's first use from this address is audited once; do it beforehand.
    for key in keys.values():
        call(stack, "GET", "/v1/models", key)
    foreign_ids = {v for k, v in world.ids.items() if k != "team_id"}
    missing_ids = {name: f"{value[:-6]}zzzzzz" for name, value in world.ids.items()}

    before = _database_digest(stack)
    upstream_before = len(stack.sandbox.requests())
    depth_before = _broker_depth(stack)
    refused = 0  # authenticated 403/404 answers: each must leave one failure audit
    routes = app_routes()

    for (method, template), expect in sorted(EXPECTED.items()):
        if (method, template) not in routes:
            continue  # an entry for a route this checkout does not serve
        path = _fill(template, world.ids)
        body = _fill(expect.body, world.ids) if expect.body is not None else None
        if template.startswith(DASHBOARD):
            continue  # signed-in browser sessions, not keys: test_dashboard_isolation.py
        if template in PUBLIC:
            status, _body, _ = call(stack, method, path)
            assert status == 200, (method, template, status)
            continue
        # No key, or a malformed one: 401 in OpenAI's shape, whatever the route.
        for key in (None, "ftq_sk_notakey"):
            status, error, _ = call(stack, method, path, key, body)
            assert status == 401, (method, template, key, status, error)
            assert_openai_error(error, type_="authentication_error")
        for role, wanted in expect.statuses.items():
            status, got, _ = call(stack, method, path, keys[role], body)
            where = (method, template, role)
            assert status == wanted, (*where, status, got)
            refused += status in (403, 404)
            if status >= 400:
                assert_openai_error(got)
            if expect.listing and status == 200:
                text = json.dumps(got)
                assert not any(i in text for i in foreign_ids), (*where, "lists A's objects")
            if status in (400, 404) and any("{" + n + "}" in template for n in world.ids):
                # A foreign id is answered exactly like an id that does not exist.
                status2, got2, _ = call(
                    stack,
                    method,
                    _fill(template, missing_ids),
                    keys[role],
                    _fill(expect.body, missing_ids) if expect.body is not None else None,
                )
                assert (status2, got2["error"]["code"]) == (status, got["error"]["code"]), where
                refused += status2 in (403, 404)

    assert refused > 100  # the matrix really ran: B's roles got their 403s and 404s
    after = _database_digest(stack)
    # Nothing changed: every table but the audit log and key addresses is identical.
    changed = [
        name
        for name in before
        if name not in ("audit_events", "api_key_addresses") and before[name] != after[name]
    ]
    assert not changed, f"tables changed by refused calls: {changed}"
    assert after["api_key_addresses"] == before["api_key_addresses"]
    # Only failure audits were added, never one in A's team, each 403/404 with B's key.
    new_events = after["audit_events"][len(before["audit_events"]) :]
    assert {e["action"] for e in new_events} <= {"auth.failed", "access.denied", "access.not_found"}
    assert not [e for e in new_events if e["team_id"] == a.id]
    refusals = [e for e in new_events if e["action"] in ("access.denied", "access.not_found")]
    assert len(refusals) == refused
    b_refusals = [e for e in refusals if e["team_id"] == b.id]
    assert b_refusals and all(e["actor_key_id"] in key_ids for e in b_refusals)
    # Nothing was enqueued and nothing reached the upstream.
    assert _broker_depth(stack) == depth_before
    assert len(stack.sandbox.requests()) == upstream_before

    # A's own view is intact: its objects are all still there.
    client = stack.client(a.keys["admin"])
    assert client.files.retrieve(world.ids["file_id"]).id == world.ids["file_id"]
    assert client.fine_tuning.jobs.retrieve(world.ids["job_id"]).status == "succeeded"
    status, audit_page, _ = call(stack, "GET", "/v1/audit_events?limit=100", b.keys["admin"])
    assert status == 200 and {e["team_id"] for e in audit_page["data"]} == {b.id}
