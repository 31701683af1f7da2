"""Graders: check a grader's definition once (at create), then grade one item at a time.

Definitions follow OpenAI's Grader* schemas. ``validate`` refuses anything a run could not
execute — an unknown type or metric, a template naming a field the eval's items do not
have, a formula that is not plain arithmetic, the ``python`` grader (ftq has no sandboxed
runner for arbitrary code) — with a 400 naming the parameter. ``grade`` never raises for
one item's trouble: a grader that fails records an error result for that item.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.errors import InvalidRequest
from service.evals.graders import formula, metrics
from service.evals.templating import TemplateError, check_against_schema, render, strings_in

GRADER_TYPES = ("string_check", "text_similarity", "label_model", "score_model", "multi", "python")
STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
ROLES = ("user", "assistant", "system", "developer")
LABEL_SCHEMA = "ftq_label_grade"
SCORE_SCHEMA = "ftq_score_grade"


class Judge(Protocol):
    """How graders reach models: the team's provider for the named model."""

    def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The answer's text and its usage."""
        ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass
class GradeResult:
    name: str
    type: str
    score: float
    passed: bool
    sample: dict[str, Any] | None = None
    error: str | None = None
    sub_scores: dict[str, float] = field(default_factory=dict)

    def as_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "score": self.score,
            "passed": self.passed,
            "sample": self.sample,
        }
        if self.error:
            result["error"] = self.error
        return result


def _bad(message: str, param: str, code: str = "invalid_grader") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _require_str(spec: dict[str, Any], key: str, param: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or (key != "reference" and not value):
        raise _bad(f"{param}.{key} must be a non-empty string.", f"{param}.{key}")
    return value


def _check_messages(value: Any, param: str) -> None:
    if not isinstance(value, list) or not value:
        raise _bad(f"{param}.input must be a non-empty array of messages.", f"{param}.input")
    for index, message in enumerate(value):
        where = f"{param}.input[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _bad(f"{where} needs a role ({', '.join(ROLES)}).", where)
        content = message.get("content")
        if not isinstance(content, str | dict | list):
            raise _bad(f"{where}.content must be text or content parts.", f"{where}.content")


def validate(
    spec: Any,
    param: str,
    *,
    item_schema: dict[str, Any] | None = None,
    has_sample: bool = True,
    python_enabled: bool = False,
    check_model: Any = None,
    in_eval: bool = True,
) -> dict[str, Any]:
    """The grader definition, checked; raises InvalidRequest naming ``param``."""
    if not isinstance(spec, dict):
        raise _bad(f"{param} must be a grader object.", param)
    kind = spec.get("type")
    if kind not in GRADER_TYPES:
        raise _bad(
            f"{param}.type '{kind}' is not a grader type; use one of: "
            f"{', '.join(t for t in GRADER_TYPES if t != 'python')}.",
            f"{param}.type",
            "unknown_grader_type",
        )
    if kind == "python":
        raise _bad(
            "The python grader runs arbitrary code, and this ftq deployment has no sandboxed "
            "runner for it; use string_check, text_similarity, label_model, score_model or "
            "multi instead.",
            f"{param}.type",
            "python_grader_disabled",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{param}.name must be a non-empty string.", f"{param}.name")
    if kind == "string_check":
        _require_str(spec, "input", param)
        _require_str(spec, "reference", param)
        if spec.get("operation") not in STRING_OPERATIONS:
            raise _bad(
                f"{param}.operation must be one of {', '.join(STRING_OPERATIONS)}.",
                f"{param}.operation",
            )
    elif kind == "text_similarity":
        _require_str(spec, "input", param)
        _require_str(spec, "reference", param)
        metric = spec.get("evaluation_metric")
        if metric not in metrics.METRICS:
            raise _bad(
                f"{param}.evaluation_metric must be one of {', '.join(metrics.METRICS)}.",
                f"{param}.evaluation_metric",
            )
        if metric == "meteor" and not metrics.meteor_available():
            raise _bad(
                metrics.METEOR_UNAVAILABLE, f"{param}.evaluation_metric", "metric_unavailable"
            )
        threshold = spec.get("pass_threshold")
        if in_eval and not isinstance(threshold, int | float):
            raise _bad(
                f"{param}.pass_threshold is required for text_similarity (a number in [0, 1]).",
                f"{param}.pass_threshold",
            )
    elif kind in ("label_model", "score_model"):
        model = spec.get("model")
        if not isinstance(model, str) or not model:
            raise _bad(f"{param}.model must name a model.", f"{param}.model")
        _check_messages(spec.get("input"), param)
        if kind == "label_model":
            labels, passing = spec.get("labels"), spec.get("passing_labels")
            if (
                not isinstance(labels, list)
                or not labels
                or not all(isinstance(x, str) and x for x in labels)
            ):
                raise _bad(
                    f"{param}.labels must be a non-empty list of strings.", f"{param}.labels"
                )
            if not isinstance(passing, list) or not passing or not set(passing) <= set(labels):
                raise _bad(
                    f"{param}.passing_labels must be a non-empty subset of labels.",
                    f"{param}.passing_labels",
                )
        else:
            bounds = spec.get("range")
            if bounds is not None and (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(isinstance(x, int | float) for x in bounds)
                or bounds[0] >= bounds[1]
            ):
                raise _bad(f"{param}.range must be [low, high] with low < high.", f"{param}.range")
        if check_model is not None:
            check_model(model, f"{param}.model")
    elif kind == "multi":
        graders = spec.get("graders")
        if isinstance(graders, dict) and graders.get("type") in GRADER_TYPES:
            graders = {graders.get("name") or "grader": graders}
        if not isinstance(graders, dict) or not graders:
            raise _bad(f"{param}.graders must map names to graders.", f"{param}.graders")
        for key, inner in graders.items():
            validate(
                inner,
                f"{param}.graders.{key}",
                item_schema=item_schema,
                has_sample=has_sample,
                python_enabled=python_enabled,
                check_model=check_model,
                in_eval=False,
            )
        try:
            formula.parse(spec.get("calculate_output", ""), set(graders))
        except formula.FormulaError as exc:
            raise _bad(str(exc), f"{param}.calculate_output") from None
        spec = {**spec, "graders": graders}
    if item_schema is not None:
        for text in strings_in({k: v for k, v in spec.items() if k != "graders"}):
            try:
                check_against_schema(text, item_schema, has_sample=has_sample)
            except TemplateError as exc:
                raise _bad(f"{param}: {exc}", param, "invalid_template") from None
    return spec


# --- grading ---------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list):
        return "".join(_text_of(part) for part in content)
    return ""


def render_messages(
    messages: list[dict[str, Any]], namespaces: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        {"role": m["role"], "content": render(_text_of(m.get("content")), namespaces)}
        for m in messages
    ]


def _sampling(spec: dict[str, Any]) -> dict[str, Any]:
    params = dict(spec.get("sampling_params") or {})
    if "max_completions_tokens" in params:  # the schema's own spelling
        params["max_completion_tokens"] = params.pop("max_completions_tokens")
    params.setdefault("temperature", 0)
    return {k: v for k, v in params.items() if v is not None and k != "reasoning_effort"}


def _label_grade(spec: dict[str, Any], namespaces: dict[str, Any], judge: Judge) -> GradeResult:
    labels: list[str] = spec["labels"]
    instruction = (
        'Grade the conversation below. Answer with a JSON object {"label": ...} whose label '
        f"is exactly one of: {json.dumps(labels)}."
    )
    messages = [
        {"role": "system", "content": instruction},
        *render_messages(spec["input"], namespaces),
    ]
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": LABEL_SCHEMA,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": labels}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }
    text, usage = judge.complete(
        spec["model"], messages, {**_sampling(spec), "response_format": schema}
    )
    label = _parse_field(text, "label")
    if label not in labels:
        raise GraderFailure(f"the judge answered {text[:200]!r}, not one of the labels")
    passed = label in spec["passing_labels"]
    return GradeResult(
        spec["name"],
        "label_model",
        1.0 if passed else 0.0,
        passed,
        sample={"model": spec["model"], "label": label, "output_text": text, "usage": usage},
    )


def _score_grade(spec: dict[str, Any], namespaces: dict[str, Any], judge: Judge) -> GradeResult:
    low, high = spec.get("range") or [0.0, 1.0]
    instruction = (
        'Grade the conversation below. Answer with a JSON object {"result": number} whose '
        f"result is a score from {low} to {high}, higher is better."
    )
    messages = [
        {"role": "system", "content": instruction},
        *render_messages(spec["input"], namespaces),
    ]
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": SCORE_SCHEMA,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "result": {"type": "number"},
                    "steps": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["result"],
                "additionalProperties": False,
            },
        },
    }
    text, usage = judge.complete(
        spec["model"], messages, {**_sampling(spec), "response_format": schema}
    )
    raw = _parse_field(text, "result")
    if not isinstance(raw, int | float):
        raise GraderFailure(f"the judge answered {text[:200]!r}, not a score")
    score = float(min(max(raw, low), high))
    threshold = spec.get("pass_threshold")
    threshold = float(threshold) if isinstance(threshold, int | float) else (low + high) / 2
    return GradeResult(
        spec["name"],
        "score_model",
        score,
        score >= threshold,
        sample={"model": spec["model"], "output_text": text, "usage": usage},
    )


def _parse_field(text: str, key: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        try:
            value = json.loads(text[start : end + 1]) if start >= 0 < end else None
        except ValueError:
            value = None
    return value.get(key) if isinstance(value, dict) else None


class GraderFailure(RuntimeError):
    """One item could not be graded (a judge's unusable answer); recorded, not raised."""


def _string_check(spec: dict[str, Any], namespaces: dict[str, Any]) -> GradeResult:
    output, reference = render(spec["input"], namespaces), render(spec["reference"], namespaces)
    operation = spec["operation"]
    if operation == "eq":
        passed = output == reference
    elif operation == "ne":
        passed = output != reference
    elif operation == "like":
        passed = reference in output
    else:
        passed = reference.lower() in output.lower()
    return GradeResult(spec["name"], "string_check", 1.0 if passed else 0.0, passed)


def _cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    norm = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb / norm) if norm else 0.0


def _text_similarity(
    spec: dict[str, Any], namespaces: dict[str, Any], judge: Judge | None
) -> GradeResult:
    output, reference = render(spec["input"], namespaces), render(spec["reference"], namespaces)
    metric = spec["evaluation_metric"]
    if metric == "cosine":
        if judge is None:
            raise GraderFailure("cosine needs the provider's embeddings")
        first, second = judge.embed([output, reference])
        score = _cosine(first, second)
    else:
        score = metrics.similarity(metric, output, reference)
    threshold = spec.get("pass_threshold")
    passed = score >= float(threshold) if isinstance(threshold, int | float) else score >= 1.0
    return GradeResult(spec["name"], "text_similarity", score, passed)


def grade(
    spec: dict[str, Any], item: dict[str, Any], sample: dict[str, Any] | None, judge: Judge | None
) -> GradeResult:
    """Grade one item; a grader's own failure is an error result (score 0, not passed)."""
    namespaces = {"item": item, "sample": sample or {}}
    try:
        return _grade(spec, namespaces, judge)
    except (TemplateError, GraderFailure, formula.FormulaError, metrics.MetricUnavailable) as exc:
        return GradeResult(spec.get("name", ""), spec.get("type", ""), 0.0, False, error=str(exc))


def _grade(spec: dict[str, Any], namespaces: dict[str, Any], judge: Judge | None) -> GradeResult:
    kind = spec["type"]
    if kind == "string_check":
        return _string_check(spec, namespaces)
    if kind == "text_similarity":
        return _text_similarity(spec, namespaces, judge)
    if kind in ("label_model", "score_model"):
        if judge is None:
            raise GraderFailure(f"{kind} needs a judge model")
        return (_label_grade if kind == "label_model" else _score_grade)(spec, namespaces, judge)
    if kind == "multi":
        subs = {name: _grade(inner, namespaces, judge) for name, inner in spec["graders"].items()}
        errors = [f"{n}: {r.error}" for n, r in subs.items() if r.error]
        if errors:
            raise GraderFailure("; ".join(errors))
        scores = {name: r.score for name, r in subs.items()}
        score = formula.evaluate(spec["calculate_output"], scores)
        threshold = spec.get("pass_threshold")
        threshold = float(threshold) if isinstance(threshold, int | float) else 0.5
        return GradeResult(spec["name"], "multi", score, score >= threshold, sub_scores=scores)
    raise GraderFailure(f"grader type {kind} cannot run here")


def run_response(spec: dict[str, Any], result: GradeResult, started: float) -> dict[str, Any]:
    """``POST /fine_tuning/alpha/graders/run``'s answer for one graded sample."""
    judge_usage = (result.sample or {}).get("usage") or {}
    return {
        "reward": result.score,
        "metadata": {
            "name": spec.get("name", ""),
            "type": spec.get("type", ""),
            "errors": {
                "formula_parse_error": False,
                "invalid_variable_error": bool(result.error and "field" in result.error),
                "model_grader_parse_error": bool(
                    result.error and "judge answered" in (result.error or "")
                ),
                "model_grader_refusal_error": False,
                "model_grader_server_error": False,
                "model_grader_server_error_details": None,
                "other_error": bool(result.error) and "judge answered" not in (result.error or ""),
                "python_grader_runtime_error": False,
                "python_grader_runtime_error_details": None,
                "python_grader_server_error": False,
                "python_grader_server_error_type": None,
                "sample_parse_error": False,
                "truncated_observation_error": False,
                "unresponsive_reward_error": False,
            },
            "execution_time": round(time.monotonic() - started, 6),
            "scores": result.sub_scores or {spec.get("name", "grader"): result.score},
            "sampled_model_name": (result.sample or {}).get("model"),
            "token_usage": judge_usage.get("total_tokens"),
        },
        "sub_rewards": result.sub_scores,
        "model_grader_token_usage_per_model": (
            {(result.sample or {}).get("model"): judge_usage} if judge_usage else {}
        ),
    }
