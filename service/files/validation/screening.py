"""Moderation pre-screen: choose what to send, and turn the provider's verdicts into findings.

The HTTP call is not made here: callers pass ``moderate(texts) -> results`` (one result per
text, in order, shaped like the Moderations API's ``results[i]``).
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
        answer = list(moderate(batch))
        if len(answer) != len(batch):
            raise ValueError(f"moderate() returned {len(answer)} results for {len(batch)} inputs")
        results.extend(answer)
    return results


def _as_dict(result: Any) -> Mapping[str, Any]:
    if isinstance(result, Mapping):
        return result
    # SDK objects: aliases turn harassment_threatening back into "harassment/threatening".
    return result.model_dump(by_alias=True)


def flagged_categories(result: Mapping[str, Any], settings: ValidationSettings) -> dict[str, float]:
    """Category -> score for every category that the provider flagged or that crossed our own
    per-category threshold."""
    categories = result.get("categories") or {}
    scores = result.get("category_scores") or {}
    thresholds = settings.moderation.category_score_thresholds
    hits: dict[str, float] = {}
    for name, flagged in categories.items():
        if flagged:
            hits[name] = float(scores.get(name) or 0.0)
    for name, threshold in thresholds.items():
        score = scores.get(name)
        if score is not None and float(score) >= threshold:
            hits[name] = float(score)
    return hits


def findings_from_moderation(
    items: Sequence[tuple[int, str]], results: Sequence[Any], settings: ValidationSettings
) -> tuple[list[Finding], dict[str, Any]]:
    """One warning per flagged example, plus a blocking error past the block threshold."""
    if len(items) != len(results):
        raise ValueError("items and results must have the same length")
    options = settings.moderation
    findings: list[Finding] = []
    by_category: Counter[str] = Counter()
    flagged_lines: list[int] = []
    for (line, _), raw in zip(items, results, strict=True):
        result = _as_dict(raw)
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
