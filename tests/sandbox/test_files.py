"""Files and Uploads through the SDK."""

from __future__ import annotations

import hashlib

import openai
import pytest

from tests.sandbox.conftest import Sandbox, chat_jsonl


def test_file_roundtrip(client: openai.OpenAI) -> None:
    content = chat_jsonl()
    created = client.files.create(file=("roundtrip.jsonl", content), purpose="fine-tune")
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(content)
    assert created.filename == "roundtrip.jsonl"
    assert created.purpose == "fine-tune"
    assert created.status == "processed"
    assert client.files.retrieve(created.id).bytes == len(content)
    assert client.files.content(created.id).content == content

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.retrieve(created.id)
    assert caught.value.code == "file_not_found"


def test_list_filters_orders_and_pages(client: openai.OpenAI) -> None:
    ids = [client.files.create(file=(f"b{i}.jsonl", b"{}\n"), purpose="batch").id for i in range(3)]
    newest = client.files.list(purpose="batch")
    assert [f.id for f in newest.data][:3] == ids[::-1]
    assert newest.has_more is False
    assert all(f.purpose == "batch" for f in newest.data)
    assert all(f.expires_at is not None for f in newest.data)  # batch files expire

    first = client.files.list(purpose="batch", order="asc", limit=2)
    assert first.has_more is True
    rest = client.files.list(purpose="batch", order="asc", limit=2, after=first.data[-1].id)
    assert [f.id for f in first.data + rest.data][-3:] == ids
    assert rest.has_more is False


def test_exact_page_size_has_no_more(client: openai.OpenAI) -> None:
    client.files.create(file=("only.jsonl", b"{}\n"), purpose="evals")
    page = client.files.list(purpose="evals", limit=len(client.files.list(purpose="evals").data))
    assert page.has_more is False


def test_invalid_uploads_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("x.jsonl", b"{}"), purpose="bogus")  # type: ignore[arg-type]
    assert caught.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("train.csv", b"a,b"), purpose="fine-tune")
    assert caught.value.param == "file"


def test_multipart_upload_in_declared_order(client: openai.OpenAI) -> None:
    content = chat_jsonl()
    half = len(content) // 2
    upload = client.uploads.create(
        bytes=len(content), filename="big.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    assert upload.status == "pending" and upload.id.startswith("upload_")
    assert upload.expires_at - upload.created_at == 3600
    # Parts arrive out of order; complete() fixes the order.
    second = client.uploads.parts.create(upload_id=upload.id, data=content[half:])
    first = client.uploads.parts.create(upload_id=upload.id, data=content[:half])
    assert first.object == "upload.part" and first.upload_id == upload.id
    done = client.uploads.complete(
        upload_id=upload.id,
        part_ids=[first.id, second.id],
        md5=hashlib.md5(content).hexdigest(),
    )
    assert done.status == "completed"
    assert done.file is not None and done.file.bytes == len(content)
    assert client.files.content(done.file.id).content == content
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload_id=upload.id, data=b"late")


def test_upload_byte_count_must_match(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        bytes=100, filename="short.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    part = client.uploads.parts.create(upload_id=upload.id, data=b"x" * 10)
    with pytest.raises(openai.BadRequestError) as caught:
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])
    assert "100 bytes" in caught.value.message
    cancelled = client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])


def test_unknown_upload_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.uploads.cancel("upload_missing")


def test_missing_file_field(sandbox: Sandbox) -> None:
    with sandbox.control() as http:
        response = http.post(
            "/v1/files",
            data={"purpose": "fine-tune"},
            files={"other": ("a.jsonl", b"{}")},
            headers={"Authorization": "Bearer test"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
