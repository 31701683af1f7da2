"""Bad input gets a precise 4xx in OpenAI's error shape and leaves nothing behind."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlmodel import select

from tests.integration.stack import Stack, Team
from tests.integration.test_auth_and_isolation import assert_openai_error, raw


def file_rows(stack: Stack, team: Team) -> list[Any]:
    def query(session: Any) -> list[Any]:
        from service.files.models import File

        return list(session.exec(select(File).where(File.team_id == team.id)))

    return stack.db(query)


def staged_leftovers(stack: Stack) -> list[Path]:
    staging = stack.root / "files" / ".staging"
    return list(staging.iterdir()) if staging.exists() else []


@pytest.mark.parametrize(
    ("filename", "content", "code"),
    [
        ("empty.jsonl", b"", "empty_file"),
        ("data.csv", b"prompt,completion\nhi,there\n", "invalid_file_format"),
        ("notjson.jsonl", b"this is not json\n", "invalid_file_format"),
    ],
)
def test_bad_uploads_are_refused_without_a_trace(
    stack: Stack, team: Team, filename: str, content: bytes, code: str
) -> None:
    client = stack.client(team.keys["member"])
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=(filename, io.BytesIO(content)), purpose="fine-tune")
    assert caught.value.code == code
    assert caught.value.param == "file"
    assert file_rows(stack, team) == []
    assert staged_leftovers(stack) == []


def test_oversized_upload_is_413_and_leaves_nothing(stack: Stack, team: Team) -> None:
    # The shared stack's limit is 2 MiB; send 3 MiB of valid JSONL.
    line = json.dumps({"messages": [{"role": "user", "content": "x" * 1000}]}) + "\n"
    big = (line * (3 * 1024 * 1024 // len(line) + 1)).encode()
    client = stack.client(team.keys["member"])
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", io.BytesIO(big)), purpose="fine-tune")
    assert caught.value.status_code == 413
    assert caught.value.code == "file_too_large"
    assert file_rows(stack, team) == []
    assert staged_leftovers(stack) == []
    assert (
        not any((stack.root / "files" / team.id).glob("*"))
        if (stack.root / "files" / team.id).exists()
        else True
    )


def test_wrong_purpose_and_missing_fields(stack: Stack, team: Team, dataset: Path) -> None:
    client = stack.client(team.keys["member"])
    with pytest.raises(openai.BadRequestError) as caught, dataset.open("rb") as handle:
        client.files.create(file=handle, purpose="batch")
    assert caught.value.param == "purpose"
    status, body = raw(
        stack, "POST", "/v1/files", team.keys["member"], body={"purpose": "fine-tune"}
    )
    assert status == 400
    assert_openai_error(body, type_="invalid_request_error")
    assert file_rows(stack, team) == []


def test_job_requests_are_checked_before_anything_is_queued(
    stack: Stack, team: Team, dataset: Path
) -> None:
    client = stack.client(team.keys["member"])
    with dataset.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    bad_requests: list[tuple[dict[str, Any], str | None]] = [
        ({"model": "gpt-unknown", "training_file": uploaded.id}, "model"),
        ({"model": "gpt-4o-mini-2024-07-18", "training_file": "file-nope"}, "training_file"),
        (
            {"model": "gpt-4o-mini-2024-07-18", "training_file": uploaded.id, "suffix": "x" * 65},
            "suffix",
        ),
        (
            {
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": uploaded.id,
                "hyperparameters": {"n_epochs": 51},
            },
            "hyperparameters.n_epochs",
        ),
        (
            {
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": uploaded.id,
                "method": {"type": "bogus"},
            },
            "method.type",
        ),
        (
            {
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": uploaded.id,
                "metadata": {f"k{i}": "v" for i in range(17)},
            },
            "metadata",
        ),
        ({"training_file": uploaded.id}, "model"),
        (
            {
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": uploaded.id,
                "validation_file": uploaded.id,
            },
            "validation_file",
        ),
    ]
    for body, param in bad_requests:
        status, answer = raw(stack, "POST", "/v1/fine_tuning/jobs", team.keys["member"], body=body)
        assert status == 400, (body, answer)
        error = assert_openai_error(answer, type_="invalid_request_error")
        assert error["param"] == param, (body, error)
    status, answer = raw(stack, "POST", "/v1/fine_tuning/jobs", team.keys["member"], body=[1, 2])
    assert status == 400
    assert client.fine_tuning.jobs.list().data == []


def test_unknown_routes_and_methods_answer_in_openai_shape(stack: Stack, team: Team) -> None:
    status, body = raw(stack, "GET", "/v1/nope", team.keys["member"])
    assert status == 404
    assert assert_openai_error(body)["code"] == "unknown_url"
    status, body = raw(stack, "PUT", "/v1/files", team.keys["member"])
    assert status == 405
    assert_openai_error(body)
