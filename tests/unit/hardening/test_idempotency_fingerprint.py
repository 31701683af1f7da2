"""The Idempotency-Key fingerprint covers the whole body, however it is chunked, and a
multipart body by its parts, not by the boundary a client drew for this attempt."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.idempotency import BodyFingerprint

LINE = b"POST /v1/files?"


def fingerprint(chunks: list[bytes], boundary: bytes | None = None) -> str:
    media_type = b"multipart/form-data" if boundary else b"application/json"
    hasher = BodyFingerprint(LINE, media_type, boundary)
    for index, chunk in enumerate(chunks):
        hasher.update(chunk, more=index < len(chunks) - 1)
    assert hasher.complete
    return hasher.hexdigest()


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(body)) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(body[start:point])
        start = point
    pieces.append(body[start:])
    return pieces


def multipart(boundary: bytes, content: bytes) -> bytes:
    return (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        b"fine-tune\r\n--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="train.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def test_same_length_different_content_differs() -> None:
    # The regression: the old multipart fingerprint was the Content-Length only.
    first = multipart(b"abc123", b'{"a": 1}\n')
    second = multipart(b"abc123", b'{"a": 2}\n')
    assert len(first) == len(second)
    assert fingerprint([first], b"abc123") != fingerprint([second], b"abc123")


def test_a_new_boundary_for_the_same_parts_is_the_same_request() -> None:
    content = b'{"messages": []}\n' * 3
    assert fingerprint([multipart(b"aaaa1111", content)], b"aaaa1111") == fingerprint(
        [multipart(b"bbbb2222", content)], b"bbbb2222"
    )


@given(
    content=st.binary(max_size=300),
    boundary=st.binary(min_size=8, max_size=40).filter(lambda b: b"\r" not in b),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12),
)
def test_chunking_never_changes_the_fingerprint(
    content: bytes, boundary: bytes, cuts: list[int]
) -> None:
    body = multipart(boundary, content)
    assert fingerprint(split(body, cuts), boundary) == fingerprint([body], boundary)
    assert fingerprint(split(body, cuts)) == fingerprint([body])


def test_path_and_media_type_are_part_of_it() -> None:
    body = [b'{"model": "m"}']
    other_path = BodyFingerprint(b"POST /v1/fine_tuning/jobs/estimate?", b"application/json", None)
    other_path.update(body[0], more=False)
    assert other_path.hexdigest() != fingerprint(body)
