"""ftq keeps the contract it publishes: every response of the full flow — upload, report,
create, follow to success, events, checkpoints, models, chat completion, files, cancel,
webhooks, keys, audit, usage and the errors — validates against ftq's own /openapi.json
(jsonschema over its components), and the document itself is typed and 422-free.

Objects are checked strictly: a declared object may carry no undeclared property (unless
its schema allows extras, as the pass-through completions do), so a field that reaches
clients without being declared fails here.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from jsonschema import Draft202012Validator

from tests.integration.conftest import CHAT_EXAMPLES
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_keys_and_audit import operator_key

TERMINAL = ("succeeded", "failed", "cancelled")


def _strict(node: Any) -> Any:
    """Forbid undeclared properties wherever a schema lists properties and says nothing."""
    if isinstance(node, dict):
        node = {key: _strict(value) for key, value in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@dataclass
class Contract:
    spec: dict[str, Any]
    checked: set[tuple[str, str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.components = _strict(copy.deepcopy(self.spec["components"]))
        # Literal segments before parameters: /jobs/estimate is not /jobs/{job_id}.
        templates = sorted(self.spec["paths"], key=lambda p: (p.count("{"), -len(p)))
        self.routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", t) + "$"), t) for t in templates
        ]

    def template(self, method: str, path: str) -> str:
        for pattern, template in self.routes:
            if pattern.match(path) and method in self.spec["paths"][template]:
                return template
        raise AssertionError(f"{method.upper()} {path} is not in /openapi.json")

    def check(self, response: httpx2.Response) -> Any:
        method = response.request.method.lower()
        template = self.template(method, response.request.url.path)
        documented = self.spec["paths"][template][method]["responses"]
        entry = documented.get(str(response.status_code))
        assert entry is not None, (
            f"{method.upper()} {template} answered {response.status_code}, which "
            f"/openapi.json does not document (it lists {sorted(documented)})"
        )
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        content = entry.get("content", {})
        assert media_type in content, f"{method.upper()} {template}: {media_type} undocumented"
        self.checked.add((method, template, response.status_code))
        if media_type != "application/json":
            return response.content
        body = response.json()
        schema = _strict(content[media_type]["schema"])
        errors = sorted(
            Draft202012Validator({**schema, "components": self.components}).iter_errors(body),
            key=lambda e: list(e.absolute_path),
        )
        assert not errors, f"{method.upper()} {template} {response.status_code}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
        )
        return body


@dataclass
class Api:
    client: httpx2.Client
    contract: Contract

    def __call__(
        self, method: str, path: str, key: str | None, expect: int = 200, **options: Any
    ) -> Any:
        headers = dict(options.pop("headers", {}))
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        response = self.client.request(method, path, headers=headers, **options)
        assert response.status_code == expect, (
            f"{method} {path}: {response.status_code} {response.text[:500]}"
        )
        body = self.contract.check(response)
        if expect >= 400:
            assert set(body) == {"error"} and set(body["error"]) == {
                "message",
                "type",
                "param",
                "code",
            }
        return body


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Api]:
    with httpx2.Client(base_url=stack.api_url, timeout=30) as client:
        spec = client.get("/openapi.json").json()
        yield Api(client, Contract(spec))


def test_the_document_is_typed_and_speaks_openai_errors(api: Api) -> None:
    spec = api.contract.spec
    text = json.dumps(spec)
    assert '"422"' not in text and "HTTPValidationError" not in text
    error = spec["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            for status in ("400", "401", "404", "429"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)
    bodies = {
        ("post", "/v1/files"): "multipart/form-data",
        ("post", "/v1/chat/completions"): "application/json",
        ("post", "/v1/completions"): "application/json",
    }
    for (method, path), media_type in bodies.items():
        body = spec["paths"][path][method]["requestBody"]["content"][media_type]["schema"]
        assert body["$ref"].startswith("#/components/schemas/"), path
    upload = spec["components"]["schemas"]["FileUploadForm"]
    assert set(upload["required"]) == {"file", "purpose"}


def _upload(api: Api, key: str, name: str, data: bytes, expect: int = 200) -> Any:
    return api(
        "POST",
        "/v1/files",
        key,
        expect,
        files={"file": (name, data, "application/jsonl")},
        data={"purpose": "fine-tune"},
    )


def _chat_lines(examples: list[tuple[str, str]] = CHAT_EXAMPLES) -> bytes:
    return b"".join(
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        ).encode()
        + b"\n"
        for q, a in examples
    )


def test_every_response_of_the_full_flow_matches_the_document(
    stack: Stack, team: Team, other_team: Team, api: Api, tmp_path: Path
) -> None:
    member, admin, viewer = team.keys["member"], team.keys["admin"], team.keys["viewer"]

    # Files: upload, read, list, the pre-flight report, a sample, a split.
    uploaded = _upload(api, member, "train.jsonl", _chat_lines())
    api("GET", f"/v1/files/{uploaded['id']}", member)
    api("GET", f"/v1/files/{uploaded['id']}/content", member)
    report = wait_for(
        lambda: (
            (r := api("GET", f"/v1/files/{uploaded['id']}/validation", member))["status"]
            == "completed"
            and r
        ),
        timeout=60,
        what="the pre-flight report",
    )
    assert report["verdict"] in ("pass", "warn")
    api("GET", f"/v1/files/{uploaded['id']}/sample", member, params={"n": 3, "seed": 1})
    split = api(
        "POST",
        f"/v1/files/{uploaded['id']}/split",
        member,
        json={"validation_fraction": 0.2, "seed": 3},
    )
    listed = api("GET", "/v1/files", member, params={"limit": 2})
    assert listed["has_more"] and listed["last_id"] == listed["data"][-1]["id"]
    api("GET", "/v1/files", member, params={"after": listed["last_id"], "order": "desc"})
    api("DELETE", f"/v1/files/{split['validation_file']['id']}", member)

    # A job: estimate, create, follow to success, list, events, checkpoints.
    create = {"model": "gpt-4o-mini-2024-07-18", "training_file": uploaded["id"]}
    api("POST", "/v1/fine_tuning/jobs/estimate", member, json=create)
    job = api("POST", "/v1/fine_tuning/jobs", member, json={**create, "suffix": "contract"})
    done = wait_for(
        lambda: (
            (j := api("GET", f"/v1/fine_tuning/jobs/{job['id']}", member))["status"] in TERMINAL
            and j
        ),
        timeout=120,
        interval=0.5,
        what=f"job {job['id']} to finish",
    )
    assert done["status"] == "succeeded", done["error"]
    api("GET", "/v1/fine_tuning/jobs", member, params={"limit": 5})
    events = api("GET", f"/v1/fine_tuning/jobs/{job['id']}/events", member, params={"limit": 3})
    assert events["has_more"]
    api(
        "GET",
        f"/v1/fine_tuning/jobs/{job['id']}/events",
        member,
        params={"limit": 100, "after": events["last_id"]},
    )
    checkpoints = api("GET", f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", member)
    assert checkpoints["data"] and checkpoints["first_id"] == checkpoints["data"][0]["id"]
    _check_webhook_bodies(stack, api.contract, {job["id"], uploaded["id"]})

    # Models and inference.
    models = api("GET", "/v1/models", member)
    assert done["fine_tuned_model"] in [m["id"] for m in models["data"]]
    api("GET", f"/v1/models/{done['fine_tuned_model']}", member)
    question, answer = CHAT_EXAMPLES[4]
    reply = api(
        "POST",
        "/v1/chat/completions",
        member,
        json={
            "model": done["fine_tuned_model"],
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
        },
    )
    assert reply["choices"][0]["message"]["content"] == answer

    # Cancel a second job before it reaches the provider's end.
    second = api("POST", "/v1/fine_tuning/jobs", member, json=create)
    cancelled = api("POST", f"/v1/fine_tuning/jobs/{second['id']}/cancel", member)
    assert cancelled["id"] == second["id"]

    # Webhook endpoints, a test delivery and its attempts (nothing listens on port 9).
    endpoint = api(
        "POST",
        "/v1/webhook_endpoints",
        admin,
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["fine_tuning.job.succeeded"]},
    )
    api("GET", "/v1/webhook_endpoints", member)
    api("GET", f"/v1/webhook_endpoints/{endpoint['id']}", member)
    api("PATCH", f"/v1/webhook_endpoints/{endpoint['id']}", admin, json={"description": "c"})
    api("GET", f"/v1/webhook_endpoints/{endpoint['id']}/secret", admin)
    delivery = api("POST", f"/v1/webhook_endpoints/{endpoint['id']}/test", admin)
    base = f"/v1/webhook_endpoints/{endpoint['id']}/deliveries"
    wait_for(
        lambda: api("GET", f"{base}/{delivery['id']}/attempts", member)["data"],
        timeout=30,
        what="the test delivery's first attempt",
    )
    api("GET", base, member)
    api("GET", f"{base}/{delivery['id']}", member)
    api("GET", "/v1/webhook_endpoints/notices", member)
    api("POST", f"/v1/webhook_endpoints/{endpoint['id']}/recover", admin, json={"since": 0})
    api("DELETE", f"/v1/webhook_endpoints/{endpoint['id']}", admin)

    # Keys, audit, usage, budget, credentials, tenants.
    key = api("POST", "/v1/api_keys", admin, json={"name": "contract", "role": "viewer"})
    assert key["key"]
    api("GET", "/v1/api_keys", admin)
    api("POST", f"/v1/api_keys/{key['id']}/rotate", admin, json={"grace_seconds": 0})
    api("POST", f"/v1/api_keys/{key['id']}/revoke", admin)
    api("GET", "/v1/audit_events", admin, params={"action": "file.*", "limit": 2})
    api("GET", "/v1/usage", member)
    api("PUT", "/v1/budget", admin, json={"monthly_budget_usd": 500})
    api("GET", "/v1/budget", member)
    api("GET", "/v1/provider_credentials", admin, expect=404)
    operator = operator_key(stack)
    api("GET", "/v1/tenants", operator, params={"limit": 2})
    api("GET", f"/v1/tenants/{team.id}", operator)
    api("GET", "/healthz", None)
    api("GET", "/readyz", None)

    # Errors: each in OpenAI's shape and documented for its operation.
    missing = api("GET", "/v1/files/file-doesnotexist", member, expect=404)
    assert missing["error"]["param"] == "id"
    foreign = _upload(api, other_team.keys["member"], "x.jsonl", _chat_lines())["id"]
    for path in (
        "/v1/fine_tuning/jobs",
        f"/v1/fine_tuning/jobs/{job['id']}/events",
        f"/v1/fine_tuning/jobs/{job['id']}/checkpoints",
        "/v1/files",
        "/v1/audit_events",
    ):
        key_ = admin if "audit" in path else member
        # An unknown cursor and another team's id answer the same, everywhere.
        for cursor in ("nope", foreign):
            error = api("GET", path, key_, 400, params={"after": cursor})["error"]
            assert (error["param"], error["code"]) == ("after", "invalid_cursor"), path
    api("GET", "/v1/files", "ftq_sk_not-a-key", expect=401)
    api("POST", "/v1/fine_tuning/jobs", viewer, expect=403, json=create)
    bad = api("POST", "/v1/fine_tuning/jobs", member, expect=400, json={"training_file": "x"})
    assert bad["error"]["param"] == "model"
    api("POST", "/v1/chat/completions", member, expect=400, json={"model": "m"})
    api(
        "POST",
        "/v1/fine_tuning/jobs",
        member,
        expect=415,
        content=b"model=x",
        headers={"content-type": "text/plain"},
    )
    api(
        "POST",
        "/v1/fine_tuning/jobs",
        member,
        expect=409,
        json={**create, "suffix": "other"},
        headers={"Idempotency-Key": _idempotent_create(api, member, create)},
    )
    _upload(api, member, "big.jsonl", b'{"a": 1}\n' * (300 * 1024), expect=413)

    covered = {(m, t) for m, t, _ in api.contract.checked}
    assert len(covered) >= 40, sorted(covered)
    assert {s for _, _, s in api.contract.checked} >= {200, 400, 401, 403, 404, 409, 413, 415}


def _check_webhook_bodies(stack: Stack, contract: Contract, object_ids: set[str]) -> None:
    """The bodies ftq built for these objects' events match the document's webhooks."""
    from sqlmodel import col, select

    from service.webhooks.events import build_payload
    from service.webhooks.outbox import OutboxEvent

    rows = stack.db(
        lambda s: [
            (r.id, r.event_type, int(r.created_at.timestamp()), r.payload, r.sequence)
            for r in s.exec(select(OutboxEvent).where(col(OutboxEvent.object_id).in_(object_ids)))
        ]
    )
    types = {event_type for _, event_type, *_ in rows}
    assert {"file.validated", "fine_tuning.job.succeeded"} <= types, types
    for row in rows:
        body = json.loads(build_payload(*row))
        post = contract.spec["webhooks"][body["type"]]["post"]
        # The envelope's own branches stay as written (an allOf); the objects are strict.
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        errors = list(
            Draft202012Validator({**schema, "components": contract.components}).iter_errors(body)
        )
        assert not errors, (body["type"], [e.message for e in errors[:3]])


def _idempotent_create(api: Api, key: str, create: dict[str, Any]) -> str:
    """A key already used for one create; the same key with another body is a 409."""
    idempotency_key = f"contract-{time.time_ns()}"
    api(
        "POST",
        "/v1/fine_tuning/jobs",
        key,
        json=create,
        headers={"Idempotency-Key": idempotency_key},
    )
    return idempotency_key
