"""Builders for small JSONL datasets used across the validation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.files.validation.settings import ValidationSettings

FAST_SETTINGS = ValidationSettings(dedup_capacity=1 << 12)


def chat(i: int, **extra: Any) -> dict[str, Any]:
    """A clean, distinct chat example."""
    example: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "You answer questions about the solar system."},
            {"role": "user", "content": f"Question number {i}: how far is planet {i} from us?"},
            {"role": "assistant", "content": f"Planet {i} is roughly {i * 7 + 3} units away."},
        ]
    }
    example.update(extra)
    return example


def pc(i: int) -> dict[str, Any]:
    return {"prompt": f"review {i} was great, rating {i} ->", "completion": f" positive {i}\n"}


def dpo(i: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"Say something nice about {i}."}]},
        "preferred_output": [{"role": "assistant", "content": f"{i} is a lovely number."}],
        "non_preferred_output": [{"role": "assistant", "content": f"{i} is boring."}],
    }


def lines_of(examples: list[Any]) -> list[str]:
    return [json.dumps(example) for example in examples]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def clean_chat_lines(n: int = 60, start: int = 0) -> list[str]:
    return lines_of([chat(i) for i in range(start, start + n)])
