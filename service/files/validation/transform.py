"""File transforms that produce new files: split, prompt/completion -> chat, review sample,
and JSONL from the files people export by hand (JSON arrays, CSV, UTF-16)."""

from __future__ import annotations

import csv
import heapq
import io
from array import array
from codecs import BOM_UTF8
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from service.files.validation.dedup import hash64
from service.files.validation.examples import iter_examples, iter_raw_lines, reservoir_sample
from service.files.validation.sniff import whole_file_problem


def _split_key(raw: bytes, seed: int) -> int:
    # Keyed on the example's content, so duplicate lines always land on the same side.
    try:
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # bad, or nested too deep
        canonical = raw.strip()
    return hash64(seed.to_bytes(8, "little", signed=True) + canonical)


def split_file(
    src: Path, train_dst: Path, valid_dst: Path, *, validation_fraction: float, seed: int
) -> tuple[int, int]:
    """Deterministic train/validation split; returns (training lines, validation lines).

    Each line gets a seeded hash of its content; the ``round(n * fraction)`` smallest go to
    validation (at least one and at most n - 1 when there are two or more lines). Original
    order is kept within each output file, and identical examples never straddle the split.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError("validation_fraction must be between 0 and 1 (exclusive)")
    keys = array("Q", (_split_key(raw, seed) for _, raw in iter_raw_lines(src)))
    n = len(keys)
    k = round(n * validation_fraction)
    if n >= 2:
        k = min(max(k, 1), n - 1)
    threshold = heapq.nsmallest(k, keys)[-1] if k else -1
    n_train = n_valid = 0
    with Path(train_dst).open("wb") as train, Path(valid_dst).open("wb") as valid:
        for index, (_, raw) in enumerate(iter_raw_lines(src)):
            if keys[index] <= threshold:
                valid.write(raw + b"\n")
                n_valid += 1
            else:
                train.write(raw + b"\n")
                n_train += 1
    return n_train, n_valid


def prompt_completion_to_messages(
    example: dict[str, Any], system_prompt: str | None = None
) -> dict[str, Any]:
    prompt, completion = example.get("prompt"), example.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise ValueError("prompt and completion must both be strings")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    # The legacy leading space on completions was a tokenization trick; chat doesn't need it.
    messages.append({"role": "user", "content": prompt.strip()})
    messages.append({"role": "assistant", "content": completion.strip()})
    return {"messages": messages}


def convert_prompt_completion_to_chat(
    src: Path, dst: Path, *, system_prompt: str | None = None
) -> int:
    """Writes a chat-format copy of a prompt/completion file; returns the examples written.

    Raises ValueError naming the first line that is not a prompt/completion example.
    """
    written = 0
    with Path(dst).open("wb") as out:
        for line, raw in iter_raw_lines(src):
            try:
                example = orjson.loads(raw)
                if type(example) is not dict:
                    raise ValueError("not a JSON object")
                converted = prompt_completion_to_messages(example, system_prompt)
            except (orjson.JSONDecodeError, ValueError) as exc:
                raise ValueError(f"line {line}: {exc}") from exc
            out.write(orjson.dumps(converted) + b"\n")
            written += 1
    return written


def sample_lines(path: Path, n: int, seed: int) -> list[tuple[int, dict[str, Any]]]:
    """A reproducible uniform sample of n examples for human review, in file order."""
    return sorted(reservoir_sample(iter_examples(path), n, seed), key=lambda item: item[0])


# -- whole files that are not JSONL -> JSONL ---------------------------------------------------

CSV_COLUMNS = ("prompt", "completion")


def _csv_record(row: dict[str, str], number: int) -> dict[str, Any]:
    fields = {(key or "").strip().lower(): value for key, value in row.items()}
    if "messages" in fields:
        try:
            messages = orjson.loads(fields["messages"] or "")
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"row {number}: the messages column is not JSON ({exc})") from exc
        return {"messages": messages}
    if all(column in fields for column in CSV_COLUMNS):
        return {column: fields[column] or "" for column in CSV_COLUMNS}
    raise ValueError(f"row {number}: no prompt/completion or messages columns")


def _csv_records(text: str) -> Iterator[dict[str, Any]]:
    first_line = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=first_line.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    for number, row in enumerate(reader, start=2):  # row 1 is the header
        yield _csv_record(row, number)


def _array_records(data: bytes) -> Iterator[dict[str, Any]]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a valid JSON array ({exc})") from exc
    if type(value) is not list:
        raise ValueError("not a JSON array")
    for index, element in enumerate(value):
        if type(element) is not dict:
            raise ValueError(f"element {index} is a {type(element).__name__}, not an object")
        yield element


def _decoded(data: bytes, code: str) -> bytes:
    if code == "encoding_utf16":
        return data.decode("utf-16").encode("utf-8")
    if code == "encoding_utf32":
        return data.decode("utf-32").encode("utf-8")
    return data


def convert_to_jsonl(src: Path, dst: Path) -> tuple[str, int]:
    """Writes a JSONL copy of a UTF-16/32 file, a JSON array or a CSV table (prompt/completion
    or messages columns); returns (what the source was, records written).

    Raises ValueError when the source is already JSONL or cannot be converted; nothing is
    left at ``dst`` then. Reads the whole source: these files are what people export by hand.
    """
    problem = whole_file_problem(Path(src))
    if problem is None or problem.code == "empty_file":
        raise ValueError("the file is already JSONL (or empty); nothing to convert")
    data = Path(src).read_bytes()
    kind = problem.code
    try:
        text = _decoded(data, kind)
        if kind.startswith("encoding_"):
            # Re-encoded, it may still be an array or a CSV: convert that too.
            inner = _inner_kind(text)
            kind = f"{kind}+{inner}" if inner else kind
        else:
            inner = kind
        if inner == "json_array_file":
            records: Iterator[dict[str, Any]] | None = _array_records(text)
        elif inner == "csv_file":
            records = _csv_records(text.decode("utf-8-sig"))
        else:
            records = None
        written = 0
        with Path(dst).open("wb") as out:
            if records is None:
                out.write(text.removeprefix(BOM_UTF8))
                written = text.count(b"\n")
            else:
                for record in records:
                    out.write(orjson.dumps(record) + b"\n")
                    written += 1
    except (ValueError, UnicodeDecodeError):
        Path(dst).unlink(missing_ok=True)
        raise
    return kind, written


def _inner_kind(text: bytes) -> str | None:
    stripped = text.lstrip().removeprefix(BOM_UTF8).lstrip()
    if stripped.startswith(b"["):
        return "json_array_file"
    first = stripped.split(b"\n", 1)[0]
    if first and not first.startswith(b"{") and any(d in first for d in (b",", b"\t", b";")):
        return "csv_file"
    return None
