"""Streaming multipart parsing for uploads.

Starlette's form parser spools the whole body before the route runs; ftq instead feeds the
request stream through python-multipart and writes the file part straight into a staged
upload, which enforces the size limit and hashes as bytes arrive. Oversized bodies are
refused from Content-Length before a byte is read when the client declares it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from service.errors import FtqError, InvalidRequest, PayloadTooLarge
from service.files.storage import LocalStorage, StagedUpload

# The routes whose bodies stream through ``read_upload`` (and its own size limit) instead
# of the JSON body limit (api.body_limit).
UPLOAD_ROUTES = frozenset({("POST", "/v1/files")})
MAX_FIELD_BYTES = 64 * 1024


def is_upload_route(method: str, path: str) -> bool:
    return (method, path.rstrip("/")) in UPLOAD_ROUTES


# Multipart framing around the file (boundaries, part headers, small fields).
ENVELOPE_ALLOWANCE = 256 * 1024


@dataclass
class ParsedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    staged: StagedUpload | None = None


async def read_upload(request: Request, storage: LocalStorage) -> ParsedUpload:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest(
            "Uploads must be multipart/form-data with a 'file' and a 'purpose' field.",
            param="file",
        )
    declared = request.headers.get("content-length")
    if (
        declared
        and declared.isdigit()
        and int(declared) > storage.max_upload_bytes + ENVELOPE_ALLOWANCE
    ):
        raise PayloadTooLarge(
            f"File exceeds the upload limit of {storage.max_upload_bytes} bytes.", param="file"
        )

    parsed = ParsedUpload()
    part: dict[str, object] = {}
    header_field = bytearray()
    header_value = bytearray()
    pending: list[bytes] = []

    def on_part_begin() -> None:
        part.clear()
        part["headers"] = {}
        part["value"] = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers = part["headers"]
        assert isinstance(headers, dict)
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        headers = part["headers"]
        assert isinstance(headers, dict)
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode(errors="replace")
        part["name"] = name
        if name == "file" and b"filename" in disp:
            if parsed.staged is not None:
                raise InvalidRequest("Send exactly one 'file' part.", param="file")
            filename = disp[b"filename"].decode(errors="replace")
            if any(ord(char) < 0x20 or ord(char) == 0x7F for char in filename):
                raise InvalidRequest(
                    "The file name contains control characters (such as NUL).", param="file"
                )
            parsed.filename = filename
            parsed.staged = storage.stage()
            part["is_file"] = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("is_file"):
            pending.append(data[start:end])
            return
        value = part["value"]
        assert isinstance(value, bytearray)
        value.extend(data[start:end])
        if len(value) > MAX_FIELD_BYTES:
            raise InvalidRequest(
                f"Form field '{part.get('name')}' is too large.", param=str(part.get("name"))
            )

    def on_part_end() -> None:
        if not part.get("is_file"):
            value = part["value"]
            assert isinstance(value, bytearray)
            parsed.fields[str(part.get("name"))] = value.decode(errors="replace")

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if pending and parsed.staged is not None:
                data = b"".join(pending)
                pending.clear()
                await run_in_threadpool(parsed.staged.write, data)
        parser.finalize()
    except FtqError:
        if parsed.staged is not None:
            parsed.staged.discard()
        raise
    except (MultipartParseError, ClientDisconnect) as exc:
        if parsed.staged is not None:
            parsed.staged.discard()
        raise InvalidRequest(f"Malformed multipart body: {exc}", param="file") from exc
    except BaseException:
        if parsed.staged is not None:
            parsed.staged.discard()
        raise
    if parsed.staged is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    return parsed
