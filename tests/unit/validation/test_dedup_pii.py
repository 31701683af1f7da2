"""The fixed-size duplicate table and the PII detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.files.validation.dedup import HashIndex, near_hash
from service.files.validation.pii import find_pii, luhn_valid
from service.files.validation.validator import validate_file

from .helpers import FAST_SETTINGS, clean_chat_lines, write_lines


def test_hash_index_remembers_first_line_and_saturates() -> None:
    index = HashIndex(8)
    assert index.add_or_get(11, 1) is None
    assert index.add_or_get(11, 5) == 1
    for key in range(100, 110):
        index.add_or_get(key, key)
    assert index.saturated
    assert index.size == 6  # 75 % of 8 slots
    assert index.get(11) == 1


def test_saturated_table_is_reported(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", clean_chat_lines(60))
    report = validate_file(
        path, workers=1, settings=FAST_SETTINGS.model_copy(update={"dedup_capacity": 16})
    )
    assert report.counts_by_code == {"dedup_partial": 1}


def test_near_hash_ignores_case_spacing_and_punctuation() -> None:
    a = near_hash(b"Hello,   World! How are you today?", 10)
    assert a == near_hash(b"hello world how are you today", 10)
    assert near_hash(b"hi", 10) == 0


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("write to jane.doe+ft@example.co.uk now", "pii_email"),
        ("ring +44 20 7946 0958 please", "pii_phone"),
        ("call (415) 555-0199", "pii_phone"),
        ("pay with 4111-1111-1111-1111", "pii_card_number"),
        ("token ghp_" + "a" * 36, "pii_api_key"),
        ("AKIAIOSFODNN7EXAMPLE", "pii_api_key"),
    ],
)
def test_pii_found(text: str, code: str) -> None:
    assert [found for found, _ in find_pii(text)] == [code]


@pytest.mark.parametrize(
    "text",
    [
        "version 2024-07-18 and pi 3.14",
        "order 4111 1111 1111 1112 failed",  # fails Luhn and is no phone shape
        "a sha abcdef0123456789abcdef0123456789",
        "plain words only",
    ],
)
def test_pii_not_found(text: str) -> None:
    assert list(find_pii(text)) == []


def test_findings_never_echo_the_full_secret() -> None:
    secret = "sk-" + "Z9" * 12
    ((_, shown),) = find_pii(f"key {secret}")
    assert secret not in shown


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


class _Collected:
    """A FindingSink stand-in that keeps every finding in order."""

    def __init__(self, cap: int) -> None:
        self.cap, self.found = cap, []

    def add(self, raw: Any, *, counted: bool = False) -> None:
        self.found.append((raw.line, raw.code, raw.message))


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_duplicate_check_finds_what_the_line_loop_finds(seed: int) -> None:
    """Same findings in the same order, same first lines, same index state: over chunks
    with repeated keys, shared home slots, lines without a near key and a table that fills
    up (the loop path is the one validation files take, with leak indexes)."""
    import random
    from array import array

    from service.files.validation import validator

    rng = random.Random(seed)
    capacity = rng.choice([64, 256, 4096])
    pool = [rng.getrandbits(64) or 1 for _ in range(rng.choice([20, 150, 3000]))]
    near_pool = [rng.getrandbits(64) or 1 for _ in range(rng.choice([10, 200]))]
    chunks = []
    for _ in range(4):
        rows = array("Q")
        for line in range(1, rng.randint(64, 400)):
            near = 0 if rng.random() < 0.2 else rng.choice(near_pool)
            rows.extend([line, rng.choice(pool), near, rng.randint(0, 2)])
        chunks.append(rows)

    def run(vectorised: bool):
        exact, near = HashIndex(capacity), HashIndex(capacity)
        sink, formats, offset = _Collected(cap=50), {}, 0
        no_leaks = (HashIndex(8), HashIndex(8))
        for rows in chunks:
            if vectorised:
                validator._check_duplicates_vectorised(rows, offset, sink, exact, near, formats)
            else:
                validator._check_duplicates(rows, offset, sink, exact, near, no_leaks, formats)
            offset += len(rows) // 4
        state = (
            [exact.get(k) for k in pool],
            [near.get(k) for k in near_pool],
            exact.saturated,
            near.saturated,
        )
        return sink.found, formats, state

    assert run(True) == run(False)
