"""Turning a dataset into eval items.

Lines may be eval items (``{"item": {...}, "sample": {...}}``), chat examples
(``{"messages": [...]}``), prompt/completion pairs, or flat objects. Chat and
prompt/completion lines become ``{"input", "ideal", "messages"}``: the last user turn, the
last assistant turn (the reference answer) and the conversation before that answer, so
templates and gates can send ``item.messages`` to a model and grade against ``item.ideal``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.errors import InvalidRequest

CHAT_ITEM_FIELDS = ("input", "ideal", "messages")
CHAT_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "input": {"type": "string"},
        "ideal": {"type": "string"},
        "messages": {"type": "array"},
    },
    "required": ["input", "ideal", "messages"],
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def chat_item(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    last_assistant = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
        default=None,
    )
    if last_assistant is None:
        return None
    prompt = [
        {"role": m["role"], "content": _text(m.get("content"))}
        for m in messages[:last_assistant]
        if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant", "developer")
    ]
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if not users:
        return None
    return {
        "input": users[-1],
        "ideal": _text(messages[last_assistant].get("content")),
        "messages": prompt,
    }


def to_item(
    line: dict[str, Any], mapping: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(item, sample) of one dataset line."""
    if "item" in line and isinstance(line["item"], dict):
        sample = line.get("sample")
        return line["item"], sample if isinstance(sample, dict) else None
    if isinstance(line.get("messages"), list):
        item = chat_item(line["messages"])
        if item is not None:
            return item, None
    if isinstance(line.get("prompt"), str) and isinstance(line.get("completion"), str):
        prompt = line["prompt"]
        return {
            "input": prompt,
            "ideal": line["completion"].strip(),
            "messages": [{"role": "user", "content": prompt}],
        }, None
    if mapping:
        item = dict(line)
        source, reference = mapping.get("input_field"), mapping.get("reference_field")
        if source and source in line:
            item["input"] = str(line[source])
            item["messages"] = [{"role": "user", "content": str(line[source])}]
        if reference and reference in line:
            item["ideal"] = str(line[reference])
        return item, None
    return line, None


def read_lines(path: Path, *, param: str, limit: int) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                raise InvalidRequest(
                    f"Line {number} of the file is not valid JSON.",
                    param=param,
                    code="invalid_file",
                ) from None
            if not isinstance(value, dict):
                raise InvalidRequest(
                    f"Line {number} of the file is not a JSON object.",
                    param=param,
                    code="invalid_file",
                )
            if number > limit:
                raise InvalidRequest(
                    f"The file has more than {limit} items, the most one run takes.", param=param
                )
            yield value


def check_items(items: list[dict[str, Any]], item_schema: dict[str, Any], param: str) -> None:
    """Every item has the fields the eval's item_schema requires, with the right JSON types."""
    required = item_schema.get("required") or [] if isinstance(item_schema, dict) else []
    properties = item_schema.get("properties") or {} if isinstance(item_schema, dict) else {}
    types: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "number": (int, float),
        "integer": int,
        "boolean": bool,
        "array": list,
        "object": dict,
    }
    for index, item in enumerate(items):
        for name in required:
            if name not in item:
                raise InvalidRequest(
                    f"Item {index} has no '{name}', which the eval's item_schema requires.",
                    param=param,
                    code="invalid_item",
                )
        for name, schema in properties.items():
            expected = types.get(str(schema.get("type"))) if isinstance(schema, dict) else None
            if name in item and expected and not isinstance(item[name], expected):
                raise InvalidRequest(
                    f"Item {index} field '{name}' should be of type {schema['type']}.",
                    param=param,
                    code="invalid_item",
                )


def holdout_split(lines: list[dict[str, Any]], fraction: float, seed: int, cap: int) -> list[int]:
    """Indices of a deterministic held-out share (the same job always gets the same split)."""
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    size = max(1, min(cap, round(len(lines) * fraction)))
    return sorted(order[:size])
