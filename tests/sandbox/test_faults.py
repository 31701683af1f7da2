"""Auth, fault injection, create-hold, job caps, request log, stats and reset."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx2
import openai
import pytest

from tests.sandbox.conftest import FAST, Sandbox, start_sandbox


def test_missing_or_empty_key_is_401(sandbox: Sandbox) -> None:
    with sandbox.control() as http:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}):
            response = http.get("/v1/models", headers=headers)
            assert response.status_code == 401
            assert response.json() == {
                "error": {
                    "message": response.json()["error"]["message"],
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
            assert response.headers["x-sandbox"] == "true"
        assert http.get("/healthz").status_code == 200
        assert http.get("/sandbox/config").status_code == 200  # control needs no key
    with pytest.raises(openai.AuthenticationError):
        sandbox.client(default_headers={"Authorization": "Basic abc"}).models.list()


def test_429_with_retry_after(client: openai.OpenAI, control: httpx2.Client) -> None:
    control.put("/sandbox/config", json={"error_rate_429": 1.0, "retry_after_seconds": 7})
    with pytest.raises(openai.RateLimitError) as caught:
        client.files.list()
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"


def test_500(client: openai.OpenAI, control: httpx2.Client) -> None:
    control.put("/sandbox/config", json={"error_rate_500": 1.0})
    with pytest.raises(openai.InternalServerError) as caught:
        client.models.list()
    assert caught.value.status_code == 500


def test_drop_surfaces_as_connection_error(client: openai.OpenAI, control: httpx2.Client) -> None:
    control.put("/sandbox/config", json={"drop_rate": 1.0, "fault_paths": "^/v1/models$"})
    with pytest.raises(openai.APIConnectionError) as caught:
        client.models.list()
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    # fault_paths limits faults to matching paths.
    assert client.files.list(limit=1).object == "list"
    dropped = control.get("/sandbox/requests", params={"path": "/v1/models"}).json()["data"]
    assert dropped[-1]["outcome"] == "dropped" and dropped[-1]["status_code"] is None


def test_drop_after_processing_still_creates(
    client: openai.OpenAI, control: httpx2.Client, training_file: str
) -> None:
    control.put(
        "/sandbox/config",
        json={"drop_rate": 1.0, "drop_mode": "after", "fault_paths": "^/v1/fine_tuning/jobs$"},
    )
    with pytest.raises(openai.APIConnectionError):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=training_file, metadata={"ftq_job_id": "drop-after"}
        )
    control.put("/sandbox/config", json={"drop_rate": 0.0})
    found = client.fine_tuning.jobs.list(metadata={"ftq_job_id": "drop-after"}).data
    assert len(found) == 1
    assert control.get("/sandbox/stats").json()["creates_by_ftq_job_id"]["drop-after"] == 1
    client.fine_tuning.jobs.cancel(found[0].id)


def test_slow_requests(client: openai.OpenAI, control: httpx2.Client) -> None:
    control.put("/sandbox/config", json={"slow_rate": 1.0, "slow_seconds": 0.3})
    started = time.monotonic()
    client.models.list()
    assert time.monotonic() - started >= 0.3
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.1).models.list()


def test_fault_seed_reproduces_the_sequence(client: openai.OpenAI, control: httpx2.Client) -> None:
    def outcomes() -> list[bool]:
        control.put("/sandbox/config", json={"error_rate_500": 0.5, "fault_seed": 1234})
        result = []
        for _ in range(12):
            try:
                client.models.list()
                result.append(True)
            except openai.InternalServerError:
                result.append(False)
        return result

    first = outcomes()
    assert True in first and False in first
    assert outcomes() == first


def test_hold_create_commits_before_answering(
    sandbox: Sandbox, control: httpx2.Client, training_file: str
) -> None:
    control.put("/sandbox/config", json={"hold_create_seconds": 2.0})
    client = sandbox.client()
    result: dict[str, Any] = {}

    def create() -> None:
        result["job"] = client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=training_file, metadata={"ftq_job_id": "held"}
        )

    thread = threading.Thread(target=create)
    thread.start()
    deadline = time.monotonic() + 1.5
    visible: list[Any] = []
    while not visible and time.monotonic() < deadline:
        visible = client.fine_tuning.jobs.list(metadata={"ftq_job_id": "held"}).data
        time.sleep(0.02)
    assert len(visible) == 1, "job must be listed while its create is still held"
    assert thread.is_alive() and "job" not in result
    log = control.get(
        "/sandbox/requests", params={"method": "POST", "path": "/v1/fine_tuning/jobs"}
    )
    held = [r for r in log.json()["data"] if r["ftq_job_id"] == "held"]
    assert held[-1]["outcome"] == "in_flight"
    thread.join(timeout=5)
    assert result["job"].id == visible[0].id

    # A client that gives up (a killed worker) still leaves exactly one job upstream.
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=training_file, metadata={"ftq_job_id": "held-2"}
        )
    assert len(client.fine_tuning.jobs.list(metadata={"ftq_job_id": "held-2"}).data) == 1
    stats = control.get("/sandbox/stats").json()
    assert stats["creates_by_ftq_job_id"]["held"] == 1
    assert stats["creates_by_ftq_job_id"]["held-2"] == 1


def test_max_active_jobs(client: openai.OpenAI, control: httpx2.Client, training_file: str) -> None:
    control.put("/sandbox/config", json={"max_active_jobs": 0})
    with pytest.raises(openai.RateLimitError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    assert caught.value.code == "rate_limit_exceeded"
    assert "concurrent" in caught.value.message


def test_refuse_new_jobs(client: openai.OpenAI, control: httpx2.Client, training_file: str) -> None:
    control.put("/sandbox/config", json={"refuse_new_jobs": True})
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    assert caught.value.code == "fine_tuning_unavailable"
    assert client.models.list().data  # inference-side endpoints keep working


def test_config_validation(control: httpx2.Client) -> None:
    bad = control.put("/sandbox/config", json={"error_rate_429": 2})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "error_rate_429"
    unknown = control.put("/sandbox/config", json={"nope": 1})
    assert unknown.status_code == 400
    good = control.put("/sandbox/config", json={"job_speed": 4})
    assert good.json()["job_speed"] == 4
    assert control.get("/sandbox/config").json()["job_speed"] == 4


def test_request_log_and_stats(sandbox: Sandbox, training_file: str) -> None:
    client = sandbox.client()
    with sandbox.control() as http:
        http.delete("/sandbox/requests")
        job = client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=training_file, metadata={"ftq_job_id": "logged"}
        )
        client.fine_tuning.jobs.retrieve(job.id)
        client.fine_tuning.jobs.cancel(job.id)
        records = http.get("/sandbox/requests").json()["data"]
        assert [(r["method"], r["route"]) for r in records] == [
            ("POST", "/v1/fine_tuning/jobs"),
            ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"),
            ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),
        ]
        create = records[0]
        assert create["status_code"] == 200 and create["outcome"] == "ok"
        assert create["ftq_job_id"] == "logged"
        assert "gpt-4o-mini" in create["body_summary"]
        assert records[1]["path"] == f"/v1/fine_tuning/jobs/{job.id}"
        gets = http.get("/sandbox/requests", params={"method": "get"}).json()["data"]
        assert len(gets) == 1

        stats = http.get("/sandbox/stats").json()
        assert stats["requests"] == {
            "POST /v1/fine_tuning/jobs": 1,
            "GET /v1/fine_tuning/jobs/{fine_tuning_job_id}": 1,
            "POST /v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel": 1,
        }
        assert stats["creates_by_ftq_job_id"]["logged"] == 1
        assert stats["jobs_created"] >= 1
        http.delete("/sandbox/requests")
        assert http.get("/sandbox/requests").json()["data"] == []


def test_reset_clears_state_and_restores_config(training_file: str) -> None:
    own = start_sandbox(FAST.updated({"job_speed": 2.0}))
    try:
        client = own.client()
        file_id = client.files.create(file=("r.jsonl", b"{}\n"), purpose="fine-tune").id
        with own.control() as http:
            http.put("/sandbox/config", json={"job_speed": 9, "error_rate_500": 0.0})
            body = http.post("/sandbox/reset").json()
            assert body["config"]["job_speed"] == 2.0
            assert http.get("/sandbox/stats").json()["jobs_created"] == 0
            assert http.get("/sandbox/requests").json()["data"] == []
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file_id)
    finally:
        own.stop()
