"""split, convert and sample: deterministic, disjoint, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.files.validation.transform import (
    convert_prompt_completion_to_chat,
    sample_lines,
    split_file,
)
from service.files.validation.validator import validate_file

from .helpers import FAST_SETTINGS, clean_chat_lines, lines_of, pc, write_lines


def split(tmp_path: Path, src: Path, name: str, fraction: float, seed: int) -> tuple[Path, Path]:
    train, valid = tmp_path / f"{name}_train.jsonl", tmp_path / f"{name}_valid.jsonl"
    split_file(src, train, valid, validation_fraction=fraction, seed=seed)
    return train, valid


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "src.jsonl", clean_chat_lines(200))
    a = split(tmp_path, src, "a", 0.1, seed=3)
    b = split(tmp_path, src, "b", 0.1, seed=3)
    c = split(tmp_path, src, "c", 0.1, seed=4)
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[1].read_bytes() == b[1].read_bytes()
    assert a[1].read_bytes() != c[1].read_bytes()


@pytest.mark.parametrize(("n", "fraction"), [(200, 0.1), (200, 0.25), (11, 0.1), (2, 0.5)])
def test_split_is_disjoint_complete_and_respects_the_fraction(
    tmp_path: Path, n: int, fraction: float
) -> None:
    lines = clean_chat_lines(n)
    src = write_lines(tmp_path / "src.jsonl", lines)
    train, valid = split(tmp_path, src, "s", fraction, seed=1)
    train_lines = train.read_text().splitlines()
    valid_lines = valid.read_text().splitlines()
    assert not set(train_lines) & set(valid_lines)
    assert sorted(train_lines + valid_lines) == sorted(lines)
    assert len(valid_lines) == max(1, round(n * fraction))
    # order within each output follows the source
    assert train_lines == [line for line in lines if line in set(train_lines)]


def test_duplicates_never_straddle_the_split(tmp_path: Path) -> None:
    lines = clean_chat_lines(50) * 2
    src = write_lines(tmp_path / "src.jsonl", lines)
    train, valid = split(tmp_path, src, "d", 0.2, seed=9)
    assert not set(train.read_text().splitlines()) & set(valid.read_text().splitlines())


def test_split_rejects_bad_fraction(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "src.jsonl", clean_chat_lines(5))
    with pytest.raises(ValueError):
        split_file(src, tmp_path / "t", tmp_path / "v", validation_fraction=1.0, seed=0)


def test_convert_prompt_completion_to_chat(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "pc.jsonl", lines_of([pc(i) for i in range(60)]))
    dst = tmp_path / "chat.jsonl"
    assert convert_prompt_completion_to_chat(src, dst, system_prompt="Rate reviews.") == 60
    first = json.loads(dst.read_text().splitlines()[0])
    assert first == {
        "messages": [
            {"role": "system", "content": "Rate reviews."},
            {"role": "user", "content": "review 0 was great, rating 0 ->"},
            {"role": "assistant", "content": "positive 0"},
        ]
    }
    report = validate_file(dst, workers=1, settings=FAST_SETTINGS)
    assert report.format == "chat" and report.verdict == "pass", report.counts_by_code


def test_convert_reports_the_bad_line(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "pc.jsonl", [*lines_of([pc(1)]), '{"messages": []}'])
    with pytest.raises(ValueError, match="line 2"):
        convert_prompt_completion_to_chat(src, tmp_path / "out.jsonl")


def test_sample_is_reproducible_and_in_file_order(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "src.jsonl", clean_chat_lines(300))
    first = sample_lines(src, 10, seed=5)
    assert first == sample_lines(src, 10, seed=5)
    assert first != sample_lines(src, 10, seed=6)
    assert len(first) == 10
    numbers = [line for line, _ in first]
    assert numbers == sorted(numbers) and len(set(numbers)) == 10
    assert len(sample_lines(src, 1000, seed=5)) == 300
