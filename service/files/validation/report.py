"""Pydantic shapes of the pre-flight report; ``Report.model_dump()`` is the JSON document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.files.validation.codes import CODES
from service.files.validation.settings import Severity

Verdict = Literal["pass", "warn", "block"]
DatasetFormat = Literal["chat", "prompt_completion", "dpo", "unknown"]
FileRole = Literal["training", "validation"]


class Finding(BaseModel):
    # None only for file-level findings (e.g. too few examples, a common prompt prefix).
    line: int | None
    code: str
    severity: Severity
    message: str
    suggestion: str
    file: FileRole = "training"


class Distribution(BaseModel):
    min: int = 0
    max: int = 0
    mean: float = 0.0
    p50: int = 0
    p90: int = 0
    p99: int = 0


class TokenStats(BaseModel):
    encoding: str
    total: int = 0
    per_example: Distribution = Field(default_factory=Distribution)
    assistant_total: int = 0
    assistant_per_example: Distribution = Field(default_factory=Distribution)
    messages_per_example: Distribution = Field(default_factory=Distribution)
    n_too_long: int = 0
    # Sum of min(context_limit, tokens) over examples: the tokens billed per epoch.
    billed_per_epoch: int = 0
    # (tokens, number of examples) pairs: lets the estimate be recomputed for another context
    # limit without re-reading the file. Its size is bounded by distinct counts, not rows.
    histogram: list[tuple[int, int]] = Field(default_factory=list)


class Estimate(BaseModel):
    model: str
    encoding: str
    n_examples: int
    n_epochs: int
    epochs_source: Literal["auto", "requested"]
    context_limit: int
    billed_tokens_per_epoch: int
    billed_tokens: int
    price_per_million_tokens: float
    cost_usd: float
    # False when the counts come from another model family's encoding than ``model`` uses.
    exact_tokens: bool = True
    notes: list[str] = Field(default_factory=list)


class ValidationFileSummary(BaseModel):
    path: str
    format: DatasetFormat
    examples: int
    tokens_total: int
    counts_by_code: dict[str, int]


class Report(BaseModel):
    path: str
    format: DatasetFormat
    formats_seen: dict[str, int]
    verdict: Verdict
    examples: int
    lines: int
    bytes: int
    model: str
    context_limit: int
    tokens: TokenStats
    estimate: Estimate
    counts_by_code: dict[str, int]
    counts_by_severity: dict[str, int]
    findings: list[Finding]
    # ``findings`` lists at most this many per code (first by line); counts_by_code counts
    # every occurrence, and findings_truncated says whether any code went past the cap.
    findings_cap_per_code: int = 100
    findings_truncated: bool = False
    # Legacy prompt/completion extras (task type, common prefix/suffix), else empty.
    legacy: dict[str, Any] = Field(default_factory=dict)
    validation_file: ValidationFileSummary | None = None
    moderation: dict[str, Any] | None = None
    duration_seconds: float = 0.0


def verdict_for(counts_by_severity: dict[str, int]) -> Verdict:
    """Any error blocks (money would be wasted or the job rejected); any warning warns."""
    if counts_by_severity.get("error", 0):
        return "block"
    if counts_by_severity.get("warning", 0):
        return "warn"
    return "pass"


def severity_counts(counts: dict[str, int], findings: list[Finding]) -> dict[str, int]:
    """Per-severity totals of counts_by_code: a code's severity is that of its findings (PII
    severities are configurable), else its default."""
    shown = {f.code: f.severity for f in findings}
    totals = {"error": 0, "warning": 0}
    for code, n in counts.items():
        info = CODES.get(code)
        severity = shown.get(code) or (info.severity if info else "warning")
        totals[severity] += n
    return totals


def add_findings(report: Report, extra: list[Finding]) -> Report:
    """A copy of ``report`` with ``extra`` findings first and the verdict recomputed."""
    counts = dict(report.counts_by_code)
    for finding in extra:
        counts[finding.code] = counts.get(finding.code, 0) + 1
    findings = [*extra, *report.findings]
    severities = severity_counts(counts, findings)
    return report.model_copy(
        update={
            "findings": findings,
            "counts_by_code": dict(sorted(counts.items())),
            "counts_by_severity": severities,
            "verdict": verdict_for(severities),
        }
    )
