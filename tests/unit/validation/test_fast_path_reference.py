"""The optimised scan (per-chunk batch counting of words, deferred content counts) against
straightforward references over random datasets: repeated system prompts, PII, exact and
near duplicates, malformed lines, unicode and odd whitespace, weights, tools, names, DPO
and prompt/completion rows, and examples past the context limit.

Reference 1: each known example's tokens counted from its parsed JSON by the cookbook rule
(tokens.count_chat_tokens) with the tokenizer itself. Reference 2: the whole report again
with every count made string by string by the tokenizer (no word cache, no batching)."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.files.validation import checks
from service.files.validation.settings import ValidationSettings
from service.files.validation.tokens import (
    _bindings_module,
    count_chat_tokens,
    count_message_tokens,
    count_tools_tokens,
    encoding_for_model,
)
from service.files.validation.validator import validate_file

MODEL = "gpt-4o-mini-2024-07-18"
# A small context limit so that some random examples are too long.
SETTINGS = ValidationSettings(dedup_capacity=1 << 12, context_limits={MODEL: 120}, min_examples=1)
BACKEND = _bindings_module().tokenizer_for_encoding(encoding_for_model(MODEL))

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "refund",
    "order",
    "café",
    "naïve",
    "Größe",
    "東京",
    "🙂",
    "✓",
    "—",
    "“quoted”",
    "don't",
    "I'LL",
    "user@example.com",
    "+1",
    "(415)",
    "555-0100",
    "4111",
    "1111",
    "1111",
    "1111",
    "sk-proj-abcdefghijklmnopqrstuv",
    "<|endoftext|>",
    "2024-07-18",
    "3.14",
]
SPACES = [" ", " ", " ", " ", "  ", "\n", " \n ", "\t", "\xa0", "\u3000", "\r\n", "\u2000 "]


def _text(rng: random.Random, n_words: int) -> str:
    parts = []
    for _ in range(n_words):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice(SPACES))
    text = "".join(parts)
    return text if rng.random() < 0.9 else text + "\ud800"[: rng.randint(0, 1)]


def _message(rng: random.Random, role: str, n_words: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "content": _text(rng, n_words)}
    roll = rng.random()
    if role == "assistant" and roll < 0.15:
        message["weight"] = rng.choice((0, 1))
    elif roll < 0.2:
        message["name"] = rng.choice(("ann", "bob"))
    elif roll < 0.25:
        message["content"] = [{"type": "text", "text": _text(rng, 3)}]
    elif roll < 0.28:
        message["content"] = ""
    return message


def _chat(rng: random.Random, systems: list[str]) -> dict[str, Any]:
    messages = [{"role": "system", "content": rng.choice(systems)}] if rng.random() < 0.8 else []
    for _ in range(rng.randint(1, 3)):
        messages.append(_message(rng, "user", rng.randint(0, 25)))
        messages.append(_message(rng, "assistant", rng.randint(0, 40)))
    example: dict[str, Any] = {"messages": messages}
    if rng.random() < 0.1:
        example["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    return example


def _dpo(rng: random.Random, systems: list[str]) -> dict[str, Any]:
    inputs = [{"role": "system", "content": rng.choice(systems)}]
    if rng.random() < 0.2:  # an assistant turn in the input: not output tokens
        inputs += [_message(rng, "user", 4), _message(rng, "assistant", 6)]
    inputs.append(_message(rng, "user", rng.randint(1, 20)))
    return {
        "input": {"messages": inputs},
        "preferred_output": [_message(rng, "assistant", rng.randint(1, 30))],
        "non_preferred_output": [_message(rng, "assistant", rng.randint(1, 30))],
    }


def _prompt_completion(rng: random.Random, systems: list[str]) -> dict[str, Any]:
    return {
        "prompt": rng.choice(systems) + _text(rng, rng.randint(0, 20)) + " ->",
        "completion": " " + _text(rng, rng.randint(0, 20)),
    }


MAKERS = {"chat": _chat, "dpo": _dpo, "prompt_completion": _prompt_completion}


def _dataset(seed: int, kind: str) -> list[str]:
    rng = random.Random(seed)
    systems = [_text(rng, rng.randint(3, 30)) for _ in range(4)]
    lines: list[str] = []
    for _ in range(rng.randint(20, 120)):
        roll = rng.random()
        if roll < 0.05 and lines:
            lines.append(rng.choice(lines))  # exact duplicate
        elif roll < 0.08 and lines:
            lines.append(rng.choice(lines).upper())  # near duplicate (or now invalid)
        elif roll < 0.1:
            lines.append(rng.choice(['{"messages": [', "[1, 2]", "", "not json", '{"x": 1}']))
        else:
            example = MAKERS[kind if rng.random() < 0.95 else rng.choice(sorted(MAKERS))](
                rng, systems
            )
            lines.append(json.dumps(example, ensure_ascii=rng.random() < 0.3))
    return lines


def _backend_count(text: str) -> int:
    try:
        return int(BACKEND.count(text))
    except UnicodeEncodeError:
        return int(BACKEND.count(text.encode("utf-8", "replace").decode("utf-8")))


class _Plain:
    count = staticmethod(_backend_count)


def _reference_tokens(example: dict[str, Any]) -> int | None:
    """Tokens by the cookbook rule, from the parsed example, string by string."""
    count = _backend_count
    if "messages" in example:
        return count_chat_tokens(example, _Plain())
    if "input" in example:
        total = 3
        source = example["input"]
        for message in source["messages"]:
            total += count_message_tokens(message, count)
        total += count_tools_tokens(source.get("tools"), count)
        for key in ("preferred_output", "non_preferred_output"):
            total += count_message_tokens(example[key][0], count)
        return total
    if "prompt" in example:
        return count(example["prompt"]) + count(example["completion"])
    return None


def _report(path: Path) -> dict[str, Any]:
    report = validate_file(path, model=MODEL, settings=SETTINGS, workers=1)
    found = report.model_dump(mode="json")
    found.pop("duration_seconds")
    return found


class _StringByString:
    """Every count made by the tokenizer on the whole string, one string at a time."""

    def __init__(self, *_: object) -> None:
        self.count = self.count_uncached = _backend_count

    def count_many(self, texts: list[str]) -> np.ndarray:
        return np.array([_backend_count(text) for text in texts], dtype=np.int64)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32), st.sampled_from(sorted(MAKERS)))
def test_optimised_scan_matches_references(seed: int, kind: str) -> None:
    lines = _dataset(seed, kind)
    data = "".join(line + "\n" for line in lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.jsonl"
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
        fast = _report(path)

        expected: list[int] = []
        for line in lines:
            try:
                example = orjson.loads(line.encode("utf-8", "surrogatepass"))
            except orjson.JSONDecodeError:
                continue  # the scanner reports the line instead
            if isinstance(example, dict) and kind in MAKERS:
                tokens = _reference_tokens(example) if _well_formed(example) else None
                if tokens is not None:
                    expected.append(tokens)
        # Reference 1: token totals of the well-formed examples (others only add to them).
        histogram = dict(fast["tokens"]["histogram"])
        assert sum(expected) <= fast["tokens"]["total"]
        for tokens in set(expected):
            assert histogram.get(tokens, 0) >= expected.count(tokens)

        # Reference 2: the whole report, every count made string by string.
        with mock.patch.object(checks, "get_counter", _StringByString):
            assert _report(path) == fast
        # Deferred texts counted in many small batches within a chunk: the same report.
        with mock.patch.object(checks, "DEFERRED_CHARS", 64):
            assert _report(path) == fast


def _well_formed(example: dict[str, Any]) -> bool:
    """Examples whose every message the scanner and the cookbook rule both count."""
    if "messages" in example:
        return all(isinstance(m, dict) for m in example["messages"]) and bool(example["messages"])
    if "input" in example:
        return all(
            isinstance(example.get(key), list) and len(example[key]) == 1
            for key in ("preferred_output", "non_preferred_output")
        )
    return isinstance(example.get("prompt"), str) and isinstance(example.get("completion"), str)


def test_reference_matches_on_a_clean_file(tmp_path: Path) -> None:
    """Reference 1 exactly, where every line is a well-formed example of one format."""
    for kind in sorted(MAKERS):
        rng = random.Random(kind)
        systems = [_text(rng, 12) for _ in range(3)]
        made = (MAKERS[kind](rng, systems) for _ in range(200))
        # A lone surrogate makes its line invalid UTF-8: not a clean example.
        examples = [e for e in made if "\ud800" not in json.dumps(e, ensure_ascii=False)]
        path = tmp_path / f"{kind}.jsonl"
        path.write_text(
            "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples),
            encoding="utf-8",
            errors="surrogatepass",
        )
        report = _report(path)
        expected = [_reference_tokens(example) for example in examples]
        assert report["tokens"]["total"] == sum(t for t in expected if t is not None)
        histogram = {}
        for tokens in expected:
            histogram[tokens] = histogram.get(tokens, 0) + 1
        assert dict(report["tokens"]["histogram"]) == histogram
        too_long = sum(1 for t in expected if t is not None and t > 120)
        assert report["counts_by_code"].get("too_long", 0) == too_long
