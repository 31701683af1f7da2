"""A stored report re-targeted to another model without reading the file again.

Rule: everything that depends only on per-example token counts (context limit, too_long,
billed tokens, price, epochs) is recomputed from the report's histogram; per-line too_long
findings become one file-level count, because the histogram has no line numbers. Counts
made with another encoding stay as they are and the estimate says so (``exact_tokens``).
"""

from __future__ import annotations

from service.files.validation.codes import CODES
from service.files.validation.estimate import build_estimate
from service.files.validation.report import Finding, Report, severity_counts, verdict_for
from service.files.validation.settings import ValidationSettings, context_limit_for


def retarget(report: Report, model: str, settings: ValidationSettings) -> Report:
    """The report's counts under ``model``'s context limit and price, without the file:
    per-line too_long findings are replaced by one file-level count."""
    limit = context_limit_for(model, settings)
    histogram = [(int(t), int(n)) for t, n in report.tokens.histogram]
    estimate = build_estimate(
        model=model,
        counted_encoding=report.tokens.encoding,
        n_examples=report.examples,
        histogram=histogram,
        n_epochs="auto",
        settings=settings,
    )
    too_long = sum(n for t, n in histogram if t > limit)
    counts = {k: v for k, v in report.counts_by_code.items() if k != "too_long"}
    findings = [f for f in report.findings if f.code != "too_long"]
    if too_long:
        counts["too_long"] = too_long
        findings.append(
            Finding(
                line=None,
                code="too_long",
                severity=CODES["too_long"].severity,
                message=f"{too_long} examples are over {model}'s {limit:,}-token context.",
                suggestion=CODES["too_long"].suggestion,
            )
        )
    tokens = report.tokens.model_copy(
        update={
            "n_too_long": too_long,
            "billed_per_epoch": estimate.billed_tokens_per_epoch,
        }
    )
    severities = severity_counts(counts, findings)
    return report.model_copy(
        update={
            "model": model,
            "context_limit": limit,
            "tokens": tokens,
            "estimate": estimate,
            "findings": findings,
            "counts_by_code": dict(sorted(counts.items())),
            "counts_by_severity": severities,
            "verdict": verdict_for(severities),
        }
    )
