"""Authentication, roles and tenant isolation, answered in OpenAI's error shape."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.stack import Stack, Team


def raw(
    stack: Stack, method: str, path: str, key: str | None = None, body: Any = None
) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        stack.api_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def assert_openai_error(body: dict[str, Any], *, type_: str | None = None) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if type_:
        assert error["type"] == type_
    return error


def test_missing_bad_and_revoked_keys_are_401(stack: Stack, team: Team) -> None:
    status, body = raw(stack, "GET", "/v1/fine_tuning/jobs")
    assert status == 401
    assert assert_openai_error(body, type_="authentication_error")["code"] == "missing_api_key"

    status, body = raw(stack, "GET", "/v1/fine_tuning/jobs", key="ftq_sk_not-a-real-key")
    assert status == 401
    assert assert_openai_error(body)["code"] == "invalid_api_key"

    # Well-formed (right prefix and checksum) but unknown: same answer.
    from service.tenants.keys import generate_key

    status, body = raw(stack, "GET", "/v1/fine_tuning/jobs", key=generate_key())
    assert status == 401

    client = stack.client(team.keys["viewer"])
    assert client.fine_tuning.jobs.list().data == []

    def revoke(session: Any) -> None:
        from service.tenants.service import revoke_key

        revoke_key(session, team.id, team.key_ids["viewer"])

    stack.db(revoke)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.fine_tuning.jobs.list()
    assert caught.value.code == "revoked_api_key"


def test_viewer_cannot_write(stack: Stack, team: Team, dataset: Path) -> None:
    viewer = stack.client(team.keys["viewer"])
    with pytest.raises(openai.PermissionDeniedError) as caught, dataset.open("rb") as handle:
        viewer.files.create(file=handle, purpose="fine-tune")
    assert caught.value.status_code == 403
    member = stack.client(team.keys["member"])
    with dataset.open("rb") as handle:
        uploaded = member.files.create(file=handle, purpose="fine-tune")
    with pytest.raises(openai.PermissionDeniedError):
        viewer.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=uploaded.id)
    # Reading is what a viewer is for.
    assert viewer.files.retrieve(uploaded.id).id == uploaded.id
    # Nothing was half-created by the refused calls.
    assert [f.id for f in member.files.list().data] == [uploaded.id]
    assert member.fine_tuning.jobs.list().data == []


def test_another_teams_ids_answer_exactly_like_missing_ones(
    stack: Stack, team: Team, other_team: Team, dataset: Path
) -> None:
    owner = stack.client(team.keys["member"])
    with dataset.open("rb") as handle:
        uploaded = owner.files.create(file=handle, purpose="fine-tune")
    job = owner.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=uploaded.id)
    intruder_key = other_team.keys["admin"]

    cases = [
        ("GET", "/v1/files/{}", uploaded.id, "file-doesnotexist000000000"),
        ("GET", "/v1/files/{}/content", uploaded.id, "file-doesnotexist000000000"),
        ("GET", "/v1/files/{}/validation", uploaded.id, "file-doesnotexist000000000"),
        ("DELETE", "/v1/files/{}", uploaded.id, "file-doesnotexist000000000"),
        ("GET", "/v1/fine_tuning/jobs/{}", job.id, "ftjob-doesnotexist00000000"),
        ("POST", "/v1/fine_tuning/jobs/{}/cancel", job.id, "ftjob-doesnotexist00000000"),
        ("GET", "/v1/fine_tuning/jobs/{}/events", job.id, "ftjob-doesnotexist00000000"),
        ("GET", "/v1/fine_tuning/jobs/{}/checkpoints", job.id, "ftjob-doesnotexist00000000"),
    ]
    for method, template, foreign, missing in cases:
        foreign_status, foreign_body = raw(stack, method, template.format(foreign), intruder_key)
        missing_status, missing_body = raw(stack, method, template.format(missing), intruder_key)
        assert foreign_status == missing_status == 404, (method, template)
        foreign_error = assert_openai_error(foreign_body)
        missing_error = assert_openai_error(missing_body)
        # Same code and type; the message differs only by the id the caller sent.
        assert foreign_error["code"] == missing_error["code"]
        assert foreign_error["message"].replace(foreign, "X") == missing_error["message"].replace(
            missing, "X"
        )

    # Referencing another team's file in a job body is refused like a missing file.
    intruder = stack.client(intruder_key)
    with pytest.raises(openai.BadRequestError) as foreign_file:
        intruder.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=uploaded.id)
    with pytest.raises(openai.BadRequestError) as missing_file:
        intruder.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file="file-doesnotexist000000000"
        )
    assert foreign_file.value.code == missing_file.value.code == "file_not_found"
    assert foreign_file.value.param == "training_file"

    # Lists never show another team's objects; the owner's objects are untouched.
    assert intruder.files.list().data == []
    assert intruder.fine_tuning.jobs.list().data == []
    assert owner.files.retrieve(uploaded.id).id == uploaded.id
    assert owner.fine_tuning.jobs.retrieve(job.id).status != "cancelled"
