"""Hostile and careless input at the API's edge (issue 11): bodies bounded before they are
parsed, every query parameter range-checked, idempotency over whole bodies, the SSRF
policy on team provider URLs, and messages that say what to do."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_auth_and_isolation import assert_openai_error
from tests.integration.test_keys_and_audit import call

MODEL = "gpt-4o-mini-2024-07-18"


def _connection(stack: Stack) -> http.client.HTTPConnection:
    parsed = urllib.parse.urlsplit(stack.api_url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)


def _answer(conn: http.client.HTTPConnection) -> tuple[int, dict[str, Any]]:
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def send_declared(stack: Stack, path: str, key: str, declared: int) -> tuple[int, dict[str, Any]]:
    """Declare a huge body, send only its first bytes: the answer must not wait for more."""
    conn = _connection(stack)
    conn.putrequest("POST", path)
    for name, value in (
        ("Authorization", f"Bearer {key}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(declared)),
    ):
        conn.putheader(name, value)
    conn.endheaders()
    with contextlib.suppress(OSError):  # the server may already have answered and closed
        conn.send(b'{"model": "' + b"x" * 65536)
    try:
        return _answer(conn)
    finally:
        conn.close()


def send_chunked(stack: Stack, path: str, key: str, total: int) -> tuple[int, dict[str, Any]]:
    """A body without Content-Length, in 64 KiB chunks: counted as it arrives."""
    conn = _connection(stack)
    conn.putrequest("POST", path)
    for name, value in (
        ("Authorization", f"Bearer {key}"),
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
    ):
        conn.putheader(name, value)
    conn.endheaders()
    chunk = b" " * 65536
    try:
        for _ in range(total // len(chunk)):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass
    try:
        return _answer(conn)
    finally:
        conn.close()


def test_json_bodies_are_bounded_before_parsing(stack: Stack, team: Team) -> None:
    key = team.keys["member"]
    # 150 MB declared to a job create: refused from the header, nothing read or parsed.
    status, body = send_declared(stack, "/v1/fine_tuning/jobs", key, 150 * 1024 * 1024)
    assert status == 413, body
    error = assert_openai_error(body)
    assert error["code"] == "request_too_large" and "FTQ_MAX_REQUEST_BODY_BYTES" in error["message"]
    # Undeclared (chunked): refused once it passes the limit (8 MiB by default).
    status, body = send_chunked(stack, "/v1/fine_tuning/jobs", key, 10 * 1024 * 1024)
    assert status == 413 and assert_openai_error(body)["code"] == "request_too_large"
    # Chat bodies have their own, larger limit; past it they never reach the provider.
    before = len(stack.sandbox.requests(method="POST", path="/v1/chat/completions"))
    status, body = send_declared(stack, "/v1/chat/completions", key, 50 * 1024 * 1024)
    assert status == 413 and "FTQ_MAX_INFERENCE_BODY_BYTES" in assert_openai_error(body)["message"]
    assert len(stack.sandbox.requests(method="POST", path="/v1/chat/completions")) == before
    # Every other JSON route is bounded too.
    status, body = send_declared(stack, "/v1/webhook_endpoints", team.keys["admin"], 10**9)
    assert status == 413
    assert stack.client(key).fine_tuning.jobs.list().data == []


def test_a_body_that_is_not_json_says_which_content_type_to_send(stack: Stack, team: Team) -> None:
    conn = _connection(stack)
    payload = json.dumps({"model": MODEL, "training_file": "file-x"}).encode()
    # What `curl -d '{...}'` sends.
    conn.request(
        "POST",
        "/v1/fine_tuning/jobs",
        body=payload,
        headers={
            "Authorization": f"Bearer {team.keys['member']}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    status, body = _answer(conn)
    conn.close()
    assert status == 415
    error = assert_openai_error(body)
    assert error["code"] == "unsupported_content_type"
    assert "application/json" in error["message"] and "x-www-form-urlencoded" in error["message"]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/audit_events?since=1796055737000", "since"),  # milliseconds, an easy mistake
        ("/v1/audit_events?until=253402300800", "until"),  # year 10000
        ("/v1/audit_events?since=-1", "since"),
        ("/v1/usage?month=9999-12", "month"),
        ("/v1/usage?month=2026-13", "month"),
        ("/v1/usage?month=26-11", "month"),
        ("/v1/fine_tuning/jobs?limit=100000000000000000000000", "limit"),
        ("/v1/fine_tuning/jobs?limit=abc", "limit"),
        ("/v1/files?order=sideways", "order"),
        ("/v1/files/file-x/sample?seed=99999999999999999999999999", "seed"),
        ("/v1/files/file-x/sample?n=0", "n"),
    ],
)
def test_query_parameters_out_of_range_are_400_with_param(
    stack: Stack, team: Team, path: str, param: str
) -> None:
    status, body, _ = call(stack, "GET", path, team.keys["admin"])
    assert status == 400, (path, body)
    assert assert_openai_error(body, type_="invalid_request_error")["param"] == param


def test_milliseconds_are_named_as_such(stack: Stack, team: Team) -> None:
    _, body, _ = call(stack, "GET", "/v1/audit_events?since=1796055737000", team.keys["admin"])
    assert "milliseconds" in body["error"]["message"] and "1796055737" in body["error"]["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/file-%00abc",
        "/v1/fine_tuning/jobs?after=%00",
        "/v1/audit_events?action=file.%00",
        "/v1/fine_tuning/jobs/ftjob-%00/events",
    ],
)
def test_control_characters_in_urls_are_400_not_500(stack: Stack, team: Team, path: str) -> None:
    status, body, _ = call(stack, "GET", path, team.keys["admin"])
    assert status == 400, (path, body)
    assert assert_openai_error(body)["code"] == "invalid_url"


def test_nul_in_a_json_value_is_400_and_changes_nothing(stack: Stack, team: Team) -> None:
    status, body, _ = call(
        stack,
        "POST",
        "/v1/webhook_endpoints",
        team.keys["admin"],
        {"url": "https://93.184.215.14/hook", "description": "bad\u0000name"},
    )
    assert 400 <= status < 500, body
    assert_openai_error(body)
    status, listed, _ = call(stack, "GET", "/v1/webhook_endpoints", team.keys["admin"])
    assert status == 200 and listed["data"] == []


def _line(text: str) -> bytes:
    record = {
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "ok"},
        ]
    }
    return (json.dumps(record) + "\n").encode()


def test_idempotent_upload_fingerprints_the_whole_file(stack: Stack, team: Team) -> None:
    client = stack.client(team.keys["member"])
    first = b"".join(_line(f"question {i:03d}") for i in range(12))
    other = b"".join(_line(f"question {i + 100:03d}") for i in range(12))
    assert len(first) == len(other) and first != other
    headers = {"Idempotency-Key": f"upload-{uuid.uuid4().hex}"}
    uploaded = client.files.create(
        file=("train.jsonl", io.BytesIO(first)), purpose="fine-tune", extra_headers=headers
    )
    # Another file of the same length under the same key: a conflict, not the first file.
    with pytest.raises(openai.ConflictError) as caught:
        client.files.create(
            file=("train.jsonl", io.BytesIO(other)), purpose="fine-tune", extra_headers=headers
        )
    assert caught.value.code == "idempotency_key_reused"
    # The same bytes again (the SDK draws a new multipart boundary): replayed.
    again = client.files.with_raw_response.create(
        file=("train.jsonl", io.BytesIO(first)), purpose="fine-tune", extra_headers=headers
    )
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.parse().id == uploaded.id
    assert [f.id for f in client.files.list().data] == [uploaded.id]


def test_missing_purpose_is_named(stack: Stack, team: Team) -> None:
    conn = _connection(stack)
    boundary = "b0undary"
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + _line("hi")
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn.request(
        "POST",
        "/v1/files",
        body=payload,
        headers={
            "Authorization": f"Bearer {team.keys['member']}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    status, body = _answer(conn)
    conn.close()
    assert status == 400
    error = assert_openai_error(body)
    assert (
        error["param"] == "purpose" and "Missing required parameter: 'purpose'" in error["message"]
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"base_url": "http://169.254.169.254/latest/meta-data"},
        {"base_url": "http://10.0.0.8:8000/v1"},
        {"base_url": "http://[::1]:8000/v1"},
        {"base_url": "http://[fd00:ec2::254]/v1"},
        {"base_url": "http://192.168.1.10/v1"},
    ],
)
def test_team_provider_urls_into_internal_networks_are_refused(
    stack: Stack, team: Team, fields: dict[str, str]
) -> None:
    status, body, _ = call(
        stack,
        "PUT",
        "/v1/provider_credentials",
        team.keys["admin"],
        {"provider": "openai", "api_key": "sk-team-0123456789abcdef", **fields},
    )
    assert status == 400, body
    error = assert_openai_error(body)
    assert error["param"] == "base_url" and error["code"] == "unsafe_provider_url"
    assert "FTQ_PROVIDER_ALLOWED_NETWORKS" in error["message"] or "metadata" in error["message"]
    assert call(stack, "GET", "/v1/provider_credentials", team.keys["admin"])[0] == 404


def test_webhook_refusal_names_the_setting_that_opts_in(stack: Stack, team: Team) -> None:
    status, body, _ = call(
        stack, "POST", "/v1/webhook_endpoints", team.keys["admin"], {"url": "http://10.1.2.3/h"}
    )
    assert status == 400
    assert "FTQ_WEBHOOKS__ALLOWED_NETWORKS" in assert_openai_error(body)["message"]


def test_finished_jobs_messages_and_events(stack: Stack, team: Team, dataset: Path) -> None:
    client = stack.client(team.keys["member"])
    with dataset.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=uploaded.id)
    done = wait_for(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job.id)).status
            in ("succeeded", "failed", "cancelled")
            and j
        ),
        timeout=120,
        what="the job to finish",
    )
    assert done.status == "succeeded", done.error
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.cancel(job.id)
    assert caught.value.code == "invalid_job_state" and "succeeded" in caught.value.message
    # ftq's own "accepted" event and the provider's "Created fine-tuning job" are distinct.
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    created = [m for m in messages if m.startswith("Created fine-tuning job")]
    assert len(created) <= 1, messages
    assert any(m.startswith("Accepted by ftq") for m in messages), messages
    # A streamed call of the fine-tune carries the answer (not an empty stream).
    stream = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What is 12 times 12?"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "144."


def test_deeply_nested_or_unencodable_input_is_400(stack: Stack, team: Team) -> None:
    conn = _connection(stack)
    nested = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=nested,
        headers={
            "Authorization": f"Bearer {team.keys['member']}",
            "Content-Type": "application/json",
        },
    )
    status, body = _answer(conn)
    conn.close()
    assert status == 400 and assert_openai_error(body)
    for fields, param in (
        ({"api_key": "sk-\ud800lone-surrogate"}, "api_key"),
        ({"api_key": "sk-täst-0123456789"}, "api_key"),
        ({"api_key": "sk-team-0123456789", "organization": "org-\u00e9"}, "organization"),
    ):
        status, body, _ = call(stack, "PUT", "/v1/provider_credentials", team.keys["admin"], fields)
        assert status == 400, (fields, body)
        assert assert_openai_error(body)["param"] == param


def test_a_file_name_with_control_characters_is_refused_before_storing(
    stack: Stack, team: Team
) -> None:
    # Raw multipart: the SDK would percent-encode the NUL itself.
    conn = _connection(stack)
    boundary = "b0undary"
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"fine-tune\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="a\x00b.jsonl"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + _line("hi")
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn.request(
        "POST",
        "/v1/files",
        body=payload,
        headers={
            "Authorization": f"Bearer {team.keys['member']}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    status, body = _answer(conn)
    conn.close()
    assert status == 400, body
    error = assert_openai_error(body)
    assert error["param"] == "file" and "control characters" in error["message"]
    assert stack.client(team.keys["member"]).files.list().data == []
    staging = stack.root / "files" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_pausing_a_job_still_in_ftqs_queue_says_so(stack: Stack, team: Team, dataset: Path) -> None:
    client = stack.client(team.keys["member"])
    with dataset.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    # One more than the team's concurrency slots (3 on the shared stack): one job waits.
    jobs = [
        client.fine_tuning.jobs.create(model=MODEL, training_file=uploaded.id, suffix=f"q{i}")
        for i in range(4)
    ]
    try:
        waiting = wait_for(
            lambda: next(
                (
                    j
                    for j in (client.fine_tuning.jobs.retrieve(job.id) for job in jobs)
                    if (j.model_extra or {}).get("stage") == "waiting"
                ),
                None,
            ),
            timeout=60,
            what="a job waiting for a slot",
        )
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.pause(waiting.id)
        assert caught.value.code == "invalid_job_state"
        message = caught.value.message
        assert "ftq's queue" in message and "only queued or running" not in message
    finally:
        for job in jobs:
            with contextlib.suppress(openai.APIStatusError):
                client.fine_tuning.jobs.cancel(job.id)
