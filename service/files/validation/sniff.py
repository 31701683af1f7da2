"""Whole-file problems found before any line is read: not JSONL at all.

Rule: a file that is empty, UTF-16/32, one JSON array or a CSV table gets exactly one
file-level finding that names the fix, instead of one finding per line (a UTF-16 file is a
NUL byte on every line, a CSV an invalid JSON line per row). Only the first bytes are read,
except for a JSON array small enough to parse whole. A JSONL file with a few broken lines is
never mistaken for one of these: if any of the first lines is a JSON object, it is JSONL.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import orjson

HEAD_BYTES = 64 * 1024
# A JSON array up to this size is parsed whole to confirm it and count its elements.
ARRAY_PARSE_MAX_BYTES = 64 * 1024 * 1024
LINES_LOOKED_AT = 20
CSV_DELIMITERS = ",\t;"
CONVERT_HINT = "ftq files convert {name} {target}"


@dataclass(frozen=True)
class WholeFileProblem:
    code: str
    message: str
    suggestion: str


def _utf_bom(head: bytes) -> str | None:
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "UTF-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    return None


def _looks_utf16_without_bom(head: bytes) -> bool:
    """ASCII text in UTF-16 has a NUL in every other byte."""
    sample = head[:4096]
    if len(sample) < 8 or b"\x00" not in sample:
        return False
    even, odd = sample[0::2], sample[1::2]
    return max(even.count(0) / len(even), odd.count(0) / len(odd)) > 0.4


def _only_whitespace(path: Path) -> bool:
    with path.open("rb") as handle:
        while block := handle.read(HEAD_BYTES):
            if block.strip():
                return False
    return True


def _first_lines(head: bytes) -> list[bytes]:
    lines = [line.strip() for line in head.split(b"\n")[:-1] or [head]]
    return [line for line in lines if line][:LINES_LOOKED_AT]


def _is_object(line: bytes) -> bool:
    try:
        return type(orjson.loads(line)) is dict
    except orjson.JSONDecodeError:
        return False


def _convert_hint(path: Path) -> str:
    target = f"{path.stem}.fixed.jsonl" if path.suffix == ".jsonl" else f"{path.stem}.jsonl"
    return CONVERT_HINT.format(name=path.name, target=target)


def _json_array(path: Path, head: bytes, lines: list[bytes]) -> WholeFileProblem | None:
    if not head.lstrip().startswith(b"["):
        return None
    elements: int | None = None
    if path.stat().st_size <= ARRAY_PARSE_MAX_BYTES:
        try:
            value = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            value = None
        if type(value) is list:
            elements = len(value)
    if elements is None and _is_object(lines[0]) is False and lines[0] in (b"[", b"[{"):
        elements = -1  # too big to parse whole, but it opens like a pretty-printed array
    if elements is None:
        return None
    counted = f" of {elements:,} elements" if elements >= 0 else ""
    return WholeFileProblem(
        "json_array_file",
        f"The file is one JSON array{counted}, not JSONL (one JSON object per line).",
        f"Convert it to JSONL: `{_convert_hint(path)}` (or `jq -c '.[]'`).",
    )


def _csv(path: Path, lines: list[bytes]) -> WholeFileProblem | None:
    try:
        header = lines[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if header.startswith(("{", "[")):
        return None
    delimiter = max(CSV_DELIMITERS, key=header.count)
    columns = next(csv.reader(io.StringIO(header), delimiter=delimiter), [])
    if len(columns) < 2:
        return None
    names = [c.strip().lower() for c in columns]
    convertible = {"prompt", "completion"} <= set(names) or "messages" in names
    fix = (
        f"Convert it to JSONL: `{_convert_hint(path)}` reads its "
        + ("prompt/completion" if "messages" not in names else "messages")
        + " columns."
        if convertible
        else "Export one JSON object per line (JSONL) with prompt/completion or messages "
        "fields; `ftq files convert` reads CSV with those columns."
    )
    shown = ", ".join(c.strip() for c in columns[:8])
    return WholeFileProblem(
        "csv_file", f"The file looks like CSV (columns: {shown}), not JSONL.", fix
    )


def whole_file_problem(path: Path) -> WholeFileProblem | None:
    """The one finding for a file that is not JSONL as a whole, or None."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not head.strip() and _only_whitespace(path):
        return WholeFileProblem(
            "empty_file",
            "The file is empty." if not head else "The file holds only whitespace.",
            "Upload a JSONL file with one training example per line.",
        )
    encoding = _utf_bom(head) or ("UTF-16" if _looks_utf16_without_bom(head) else None)
    if encoding is not None:
        return WholeFileProblem(
            f"encoding_{encoding.lower().replace('-', '')}",
            f"The file is {encoding}-encoded; fine-tuning files must be UTF-8.",
            f"Re-encode it as UTF-8: `iconv -f {encoding} -t UTF-8 {path.name} > "
            f"{path.stem}.utf8.jsonl` (or `{_convert_hint(path)}`).",
        )
    lines = _first_lines(head)
    if not lines:
        return None
    array = _json_array(path, head, lines)
    if array is not None and not array.message.startswith("The file is one JSON array,"):
        return array  # parsed whole: certainly an array
    if any(_is_object(line) for line in lines):
        return None
    return array or _csv(path, lines)
