"""Moderation pre-screen: choose what to send, and turn the provider's verdicts into findings.

The HTTP call is not made here: callers pass ``moderate(texts) -> results`` (one result per
text, in order, shaped like the Moderations API's ``results[i]``).

A provider's answer is trusted for nothing: a missing or extra result, a result that is not
an object, categories that are not an object of booleans or scores that are not numbers raise
``MalformedModeration`` at once, naming what was wrong, so the caller can record it as a
finding instead of retrying an answer that will never parse.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from service.files.validation.codes import CODES
from service.files.validation.examples import example_text, iter_examples, reservoir_sample
from service.files.validation.report import Finding, Report, verdict_for
from service.files.validation.settings import ValidationSettings

Moderate = Callable[[list[str]], Sequence[Any]]


class MalformedModeration(ValueError):
    """The moderation answer does not have the Moderations API's shape."""


def select_for_screening(path: Path, settings: ValidationSettings) -> list[tuple[int, str]]:
    """(line, text) pairs to screen: every example, or a seeded uniform sample of them.

    In "all" mode the list holds every example's text; callers screening huge files should
    prefer "sample" mode, whose memory is bounded by sample_size.
    """
    options = settings.moderation
    items = (
        (line, text[: options.max_chars_per_input])
        for line, example in iter_examples(path)
        if (text := example_text(example))
    )
    if options.mode == "all":
        return list(items)
    return sorted(reservoir_sample(items, options.sample_size, options.seed))


def moderate_in_batches(
    items: Sequence[tuple[int, str]], moderate: Moderate, settings: ValidationSettings
) -> list[Any]:
    size = settings.moderation.batch_size
    results: list[Any] = []
    for start in range(0, len(items), size):
        batch = [text for _, text in items[start : start + size]]
        answer = moderate(batch)
        if not isinstance(answer, Sequence) or isinstance(answer, str | bytes):
            raise MalformedModeration(
                f"the answer's results are a {type(answer).__name__}, not a list"
            )
        if len(answer) != len(batch):
            raise MalformedModeration(f"{len(answer)} results for {len(batch)} inputs")
        results.extend(answer)
    return results


def _as_dict(result: Any, index: int) -> Mapping[str, Any]:
    if isinstance(result, Mapping):
        return result
    dump = getattr(result, "model_dump", None)
    if callable(dump):
        # SDK objects: aliases turn harassment_threatening back into "harassment/threatening".
        dumped = dump(by_alias=True)
        if isinstance(dumped, Mapping):
            return dumped
    raise MalformedModeration(f"result {index} is a {type(result).__name__}, not an object")


def _score(value: Any, name: str, index: int) -> float:
    if value is None:
        return 0.0
    if type(value) is bool or not isinstance(value, int | float):
        raise MalformedModeration(f"result {index} has a {type(value).__name__} score for {name!r}")
    return float(value)


def _checked(result: Mapping[str, Any], index: int) -> Mapping[str, Any]:
    """The result itself, once its fields have the types the findings rely on."""
    for field in ("categories", "category_scores"):
        value = result.get(field)
        if value is not None and not isinstance(value, Mapping):
            raise MalformedModeration(f"result {index} has {field} of type {type(value).__name__}")
    for name, value in (result.get("category_scores") or {}).items():
        _score(value, str(name), index)
    for name, value in (result.get("categories") or {}).items():
        if value is not None and type(value) is not bool:
            raise MalformedModeration(
                f"result {index} has a {type(value).__name__} for category {str(name)!r}"
            )
    flagged = result.get("flagged")
    if flagged is not None and type(flagged) is not bool:
        raise MalformedModeration(f"result {index} has flagged of type {type(flagged).__name__}")
    return result


def flagged_categories(result: Mapping[str, Any], settings: ValidationSettings) -> dict[str, float]:
    """Category -> score for every category that the provider flagged or that crossed our own
    per-category threshold."""
    categories = result.get("categories") or {}
    scores = result.get("category_scores") or {}
    thresholds = settings.moderation.category_score_thresholds
    hits: dict[str, float] = {}
    for name, flagged in categories.items():
        if flagged:
            hits[str(name)] = _score(scores.get(name), str(name), 0)
    for name, threshold in thresholds.items():
        score = scores.get(name)
        if score is not None and _score(score, name, 0) >= threshold:
            hits[name] = float(score)
    return hits


def findings_from_moderation(
    items: Sequence[tuple[int, str]], results: Sequence[Any], settings: ValidationSettings
) -> tuple[list[Finding], dict[str, Any]]:
    """One warning per flagged example, plus a blocking error past the block threshold."""
    if len(items) != len(results):
        raise MalformedModeration(f"{len(results)} results for {len(items)} inputs")
    options = settings.moderation
    findings: list[Finding] = []
    by_category: Counter[str] = Counter()
    flagged_lines: list[int] = []
    for index, ((line, _), raw) in enumerate(zip(items, results, strict=True)):
        result = _checked(_as_dict(raw, index), index)
        hits = flagged_categories(result, settings)
        if not (hits or result.get("flagged")):
            continue
        flagged_lines.append(line)
        by_category.update(hits.keys())
        listed = ", ".join(f"{name} ({score:.2f})" for name, score in sorted(hits.items()))
        findings.append(
            Finding(
                line=line,
                code="moderation_flagged",
                severity=CODES["moderation_flagged"].severity,
                message=f"Flagged by moderation: {listed or 'flagged'}.",
                suggestion=CODES["moderation_flagged"].suggestion,
            )
        )
    screened = len(items)
    flagged = len(flagged_lines)
    threshold = options.block_threshold
    if threshold < 1:
        blocked = screened > 0 and flagged / screened >= threshold
        rule = f"{threshold:.1%} of screened examples"
    else:
        blocked = flagged >= threshold
        rule = f"{int(threshold)} flagged examples"
    if blocked:
        findings.append(
            Finding(
                line=None,
                code="moderation_block",
                severity=CODES["moderation_block"].severity,
                message=f"{flagged} of {screened} screened examples were flagged (limit: {rule}).",
                suggestion=CODES["moderation_block"].suggestion,
            )
        )
    summary = {
        "mode": options.mode,
        "seed": options.seed if options.mode == "sample" else None,
        "screened": screened,
        "flagged": flagged,
        "flagged_fraction": round(flagged / screened, 6) if screened else 0.0,
        "by_category": dict(sorted(by_category.items())),
        "block_threshold": threshold,
        "blocked": blocked,
    }
    return findings, summary


def screen_file(
    path: Path, moderate: Moderate, settings: ValidationSettings
) -> tuple[list[Finding], dict[str, Any]]:
    """select -> batched moderate -> findings, for callers that hold a moderate() callable."""
    items = select_for_screening(path, settings)
    return findings_from_moderation(items, moderate_in_batches(items, moderate, settings), settings)


def apply_screening(
    report: Report,
    findings: Sequence[Finding],
    summary: dict[str, Any],
    settings: ValidationSettings,
) -> Report:
    """A copy of ``report`` with the moderation findings merged in and the verdict recomputed."""
    counts = Counter(report.counts_by_code)
    severities = Counter(report.counts_by_severity)
    kept = Counter(f.code for f in report.findings)
    merged = list(report.findings)
    cap = settings.findings_cap_per_code
    for finding in findings:
        counts[finding.code] += 1
        severities[finding.severity] += 1
        if kept[finding.code] < cap:
            kept[finding.code] += 1
            merged.append(finding)
    merged.sort(key=lambda f: (f.file != "training", f.line is not None, f.line or 0, f.code))
    return report.model_copy(
        update={
            "findings": merged,
            "counts_by_code": dict(sorted(counts.items())),
            "counts_by_severity": {"error": severities["error"], "warning": severities["warning"]},
            "verdict": verdict_for(severities),
            "findings_truncated": any(n > cap for n in counts.values()),
            "moderation": summary,
        }
    )
