"""Selecting examples for moderation and turning results into findings and a verdict."""

from __future__ import annotations

from pathlib import Path

from service.files.validation.screening import (
    apply_screening,
    findings_from_moderation,
    moderate_in_batches,
    screen_file,
    select_for_screening,
)
from service.files.validation.settings import ModerationSettings, ValidationSettings
from service.files.validation.validator import validate_file

from .helpers import FAST_SETTINGS, clean_chat_lines, write_lines


def settings_with(**moderation: object) -> ValidationSettings:
    return FAST_SETTINGS.model_copy(update={"moderation": ModerationSettings(**moderation)})


def result(flagged: bool, **scores: float) -> dict:
    return {
        "flagged": flagged,
        "categories": {name: flagged for name in scores},
        "category_scores": scores,
    }


def test_select_all_and_seeded_sample(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", clean_chat_lines(100))
    everything = select_for_screening(path, settings_with(mode="all"))
    assert [line for line, _ in everything] == list(range(1, 101))
    assert "Question number 0" in everything[0][1]
    sample = select_for_screening(path, settings_with(mode="sample", sample_size=10, seed=1))
    assert len(sample) == 10
    assert sample == select_for_screening(
        path, settings_with(mode="sample", sample_size=10, seed=1)
    )


def test_batching_calls_moderate_per_batch() -> None:
    calls: list[int] = []

    def moderate(texts: list[str]) -> list[dict]:
        calls.append(len(texts))
        return [result(False) for _ in texts]

    items = [(i, "text") for i in range(1, 8)]
    assert len(moderate_in_batches(items, moderate, settings_with(batch_size=3))) == 7
    assert calls == [3, 3, 1]


def test_flagged_examples_become_findings_and_can_block(tmp_path: Path) -> None:
    items = [(i, f"text {i}") for i in range(1, 11)]
    results = [result(i == 4, hate=0.9) for i in range(1, 11)]
    findings, summary = findings_from_moderation(items, results, settings_with(block_threshold=0.2))
    assert [(f.line, f.code) for f in findings] == [(4, "moderation_flagged")]
    assert "hate (0.90)" in findings[0].message
    assert summary["flagged"] == 1 and summary["by_category"] == {"hate": 1}
    assert not summary["blocked"]

    findings, summary = findings_from_moderation(items, results, settings_with(block_threshold=1))
    assert summary["blocked"] and findings[-1].code == "moderation_block"

    # our own per-category threshold flags what the provider didn't
    low = [result(False, violence=0.4) for _ in items]
    strict = settings_with(category_score_thresholds={"violence": 0.3}, block_threshold=5)
    findings, summary = findings_from_moderation(items, low, strict)
    assert summary["flagged"] == 10 and summary["blocked"]


def test_apply_screening_recomputes_the_verdict(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", clean_chat_lines(60))
    report = validate_file(path, workers=1, settings=FAST_SETTINGS)
    assert report.verdict == "pass"
    settings = settings_with(mode="all", block_threshold=2)

    def moderate(texts: list[str]) -> list[dict]:
        return [result("number 7:" in text, violence=0.8) for text in texts]

    findings, summary = screen_file(path, moderate, settings)
    warned = apply_screening(report, findings, summary, settings)
    assert warned.verdict == "warn"
    assert warned.counts_by_code == {"moderation_flagged": 1}
    assert warned.moderation == summary and report.moderation is None

    def moderate_all(texts: list[str]) -> list[dict]:
        return [result(True, hate=0.99) for _ in texts]

    findings, summary = screen_file(path, moderate_all, settings)
    blocked = apply_screening(report, findings, summary, settings)
    assert blocked.verdict == "block"
    assert blocked.counts_by_code["moderation_flagged"] == 60


def test_malformed_answers_raise_one_typed_error_naming_the_fault() -> None:
    """Issue 11 item 8: fewer results than inputs (and every other malformed shape) is a
    MalformedModeration at once, never an IndexError/TypeError deep in the merge."""
    import pytest

    from service.files.validation.screening import MalformedModeration

    items = [(i, f"text {i}") for i in range(1, 5)]
    settings = settings_with(batch_size=4)
    cases: list[tuple[object, str]] = [
        ([result(False)] * 3, "3 results for 4 inputs"),
        ([result(False)] * 5, "5 results for 4 inputs"),
        (None, "NoneType, not a list"),
        ("results", "str, not a list"),
        ([result(False)] * 3 + [7], "result 3 is a int"),
        ([result(False)] * 3 + [{"categories": ["hate"]}], "categories of type list"),
        ([result(False)] * 3 + [{"category_scores": {"hate": "high"}}], "str score for 'hate'"),
        ([result(False)] * 3 + [{"categories": {"hate": "yes"}}], "str for category 'hate'"),
        ([result(False)] * 3 + [{"flagged": "true"}], "flagged of type str"),
    ]
    for answer, expected in cases:
        with pytest.raises(MalformedModeration, match=expected):
            results = moderate_in_batches(items, lambda _batch, a=answer: a, settings)  # type: ignore[misc]
            findings_from_moderation(items, results, settings)
