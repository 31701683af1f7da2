"""Graders (OpenAI's Grader* schemas): validated once, then run item by item."""

from service.evals.graders.core import (
    GRADER_TYPES,
    GradeResult,
    GraderFailure,
    Judge,
    grade,
    render_messages,
    run_response,
    validate,
)

__all__ = [
    "GRADER_TYPES",
    "GradeResult",
    "GraderFailure",
    "Judge",
    "grade",
    "render_messages",
    "run_response",
    "validate",
]
