"""Streaming access to a JSONL file's examples, shared by screening and transforms."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

BOM = b"\xef\xbb\xbf"
T = TypeVar("T")


def iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its line ending), skipping blank lines."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield number, raw


def iter_examples(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, example) for every line that parses as a JSON object; others skipped."""
    for number, raw in iter_raw_lines(path):
        try:
            example = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if type(example) is dict:
            yield number, example


def reservoir_sample(items: Iterator[T], n: int, seed: int) -> list[T]:
    """A uniform sample of n items in one pass and O(n) memory, reproducible per seed."""
    rng = random.Random(seed)
    reservoir: list[T] = []
    for index, item in enumerate(items):
        if index < n:
            reservoir.append(item)
        else:
            slot = rng.randrange(index + 1)
            if slot < n:
                reservoir[slot] = item
    return reservoir


def _message_texts(messages: Any, out: list[str]) -> None:
    if not isinstance(messages, list):
        return
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(
                part["text"]
                for part in content
                if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            )


def example_text(example: Mapping[str, Any]) -> str:
    """The human-readable text of an example in any format (what moderation should see)."""
    out: list[str] = []
    _message_texts(example.get("messages"), out)
    source = example.get("input")
    if isinstance(source, Mapping):
        _message_texts(source.get("messages"), out)
    for key in ("preferred_output", "non_preferred_output"):
        _message_texts(example.get(key), out)
    for key in ("prompt", "completion"):
        if isinstance(example.get(key), str):
            out.append(example[key])
    return "\n".join(text for text in out if text)
