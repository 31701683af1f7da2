"""Validation of JSON request bodies with OpenAI's error messages and ``param`` paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.errors import APIError, bad_request

METHOD_TYPES = ("supervised", "dpo", "reinforcement")
_MAX_SEED = 2_147_483_647
_JOB_FIELDS = frozenset(
    {
        "model",
        "training_file",
        "validation_file",
        "hyperparameters",
        "method",
        "suffix",
        "seed",
        "integrations",
        "metadata",
    }
)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid_type(param: str, expected: str, value: Any) -> APIError:
    return bad_request(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, message: str) -> APIError:
    return bad_request(f"Invalid value for '{param}': {message}", param=param, code="invalid_value")


def missing(param: str) -> APIError:
    return bad_request(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def require_str(body: dict[str, Any], name: str, *, param: str | None = None) -> str:
    param = param or name
    if name not in body or body[name] is None:
        raise missing(param)
    value = body[name]
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    return value


def optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_type(name, "a string", value)
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None
    method_type: str
    hyperparameters: dict[str, Any]  # may hold "auto"
    method_extra: dict[str, Any]  # e.g. the RFT grader, echoed back
    suffix: str | None
    seed: int | None
    integrations: list[dict[str, Any]] | None
    metadata: dict[str, str] | None


def _auto_or(hp: dict[str, Any], name: str, param: str, check: Any, description: str) -> None:
    if name not in hp or hp[name] == "auto":
        return
    if not check(hp[name]):
        raise invalid_value(f"{param}.{name}", f"expected 'auto' or {description}.")


def _validate_hyperparameters(value: Any, method_type: str, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    allowed = {"batch_size", "learning_rate_multiplier", "n_epochs"}
    if method_type == "dpo":
        allowed.add("beta")
    if method_type == "reinforcement":
        allowed |= {"reasoning_effort", "compute_multiplier", "eval_interval", "eval_samples"}
    for key in value:
        if key not in allowed:
            raise bad_request(
                f"Unrecognized hyperparameter '{key}' for method '{method_type}'.",
                param=f"{param}.{key}",
                code="invalid_value",
            )
    _auto_or(value, "batch_size", param, lambda v: is_int(v) and 1 <= v <= 256, "an integer 1-256")
    _auto_or(
        value, "learning_rate_multiplier", param, lambda v: is_number(v) and v > 0, "a number > 0"
    )
    _auto_or(value, "n_epochs", param, lambda v: is_int(v) and 1 <= v <= 50, "an integer 1-50")
    _auto_or(value, "beta", param, lambda v: is_number(v) and 0 < v <= 2, "a number in (0, 2]")
    _auto_or(
        value,
        "compute_multiplier",
        param,
        lambda v: is_number(v) and 0.00001 < v <= 10,
        "a number in (0.00001, 10]",
    )
    _auto_or(value, "eval_interval", param, lambda v: is_int(v) and v >= 1, "an integer >= 1")
    _auto_or(value, "eval_samples", param, lambda v: is_int(v) and v >= 1, "an integer >= 1")
    effort = value.get("reasoning_effort")
    if effort is not None and effort not in ("default", "low", "medium", "high"):
        raise invalid_value(
            f"{param}.reasoning_effort", "expected one of 'default', 'low', 'medium', 'high'."
        )
    return dict(value)


def _validate_method(body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    top_level = _validate_hyperparameters(
        body.get("hyperparameters"), "supervised", "hyperparameters"
    )
    method = body.get("method")
    if method is None:
        return "supervised", top_level, {}
    if not isinstance(method, dict):
        raise invalid_type("method", "an object", method)
    method_type = method.get("type")
    if method_type is None:
        raise missing("method.type")
    if method_type not in METHOD_TYPES:
        raise invalid_value("method.type", "expected one of 'supervised', 'dpo', 'reinforcement'.")
    section = method.get(method_type) or {}
    if not isinstance(section, dict):
        raise invalid_type(f"method.{method_type}", "an object", section)
    hyperparameters = _validate_hyperparameters(
        section.get("hyperparameters"), method_type, f"method.{method_type}.hyperparameters"
    )
    if top_level and hyperparameters:
        raise bad_request(
            "Specify hyperparameters either at the top level or in 'method', not both.",
            param="hyperparameters",
        )
    extra: dict[str, Any] = {}
    if method_type == "reinforcement":
        grader = section.get("grader")
        if not isinstance(grader, dict):
            raise missing("method.reinforcement.grader")
        extra["grader"] = grader
    return method_type, hyperparameters or top_level, extra


def validate_metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    if len(value) > 16:
        raise invalid_value(param, f"at most 16 key-value pairs are allowed, got {len(value)}.")
    for key, item in value.items():
        if len(key) > 64:
            raise invalid_value(f"{param}.{key}", "keys must be at most 64 characters long.")
        if not isinstance(item, str):
            raise invalid_type(f"{param}.{key}", "a string", item)
        if len(item) > 512:
            raise invalid_value(f"{param}.{key}", "values must be at most 512 characters long.")
    return dict(value)


def _validate_integrations(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid_type("integrations", "an array", value)
    if len(value) > 5:
        raise invalid_value("integrations", "at most 5 integrations are allowed.")
    for index, item in enumerate(value):
        param = f"integrations[{index}]"
        if not isinstance(item, dict) or item.get("type") != "wandb":
            raise invalid_value(f"{param}.type", "the only supported integration is 'wandb'.")
        wandb = item.get("wandb")
        if not isinstance(wandb, dict) or not isinstance(wandb.get("project"), str):
            raise missing(f"{param}.wandb.project")
    return list(value)


def validate_job_request(body: Any) -> JobRequest:
    """Shape checks of ``POST /fine_tuning/jobs``; file and model existence is the store's."""
    body = require_object(body)
    for key in body:
        if key not in _JOB_FIELDS:
            raise bad_request(
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )
    model = require_str(body, "model")
    training_file = require_str(body, "training_file")
    validation_file = optional_str(body, "validation_file")
    suffix = optional_str(body, "suffix")
    if suffix is not None and not 1 <= len(suffix) <= 64:
        raise invalid_value("suffix", f"expected 1 to 64 characters, got {len(suffix)}.")
    seed = body.get("seed")
    if seed is not None and not (is_int(seed) and 0 <= seed <= _MAX_SEED):
        raise invalid_value("seed", f"expected an integer between 0 and {_MAX_SEED}.")
    method_type, hyperparameters, method_extra = _validate_method(body)
    return JobRequest(
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        method_type=method_type,
        hyperparameters=hyperparameters,
        method_extra=method_extra,
        suffix=suffix,
        seed=seed,
        integrations=_validate_integrations(body.get("integrations")),
        metadata=validate_metadata(body.get("metadata")),
    )
