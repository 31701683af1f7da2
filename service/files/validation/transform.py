"""File transforms that produce new files: split, prompt/completion -> chat, review sample."""

from __future__ import annotations

import heapq
from array import array
from pathlib import Path
from typing import Any

import orjson

from service.files.validation.dedup import hash64
from service.files.validation.examples import iter_examples, iter_raw_lines, reservoir_sample


def _split_key(raw: bytes, seed: int) -> int:
    # Keyed on the example's content, so duplicate lines always land on the same side.
    try:
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
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
