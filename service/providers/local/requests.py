"""A job's stored ``method`` and hyperparameters as the local trainer reads them.

Pure mapping, no job or database: the local runner calls it at create (to refuse what a
training worker would refuse) and again when a worker starts the run.
"""

from __future__ import annotations

from typing import Any

from service.providers.local.spec import TRAINING_METHOD, Hyperparameters, TrainingMethod

# ftq's own method types on the local provider (OpenAI's ``supervised`` means ``full``).
LOCAL_METHOD_TYPES = frozenset({"full", "freeze", "lora"})


def training_method(
    method: dict[str, Any] | None, hyperparameters: dict[str, Any] | None
) -> tuple[TrainingMethod, Hyperparameters]:
    """The trainer's method and hyperparameters for a job's stored ``method``; ValueError
    (pydantic's ValidationError included) names what is wrong."""
    method = method or {"type": "supervised"}
    kind = method.get("type", "supervised")
    if kind not in LOCAL_METHOD_TYPES | {"supervised"}:
        raise ValueError(f"method '{kind}' is not supported (use full, freeze, lora or supervised)")
    section = dict(method.get(kind) or {})
    hyper = section.pop("hyperparameters", None) or hyperparameters or {}
    if kind == "supervised":
        kind, section = "full", {}
    spec_method = TRAINING_METHOD.validate_python({"type": kind, **section})
    return spec_method, Hyperparameters(**{k: v for k, v in hyper.items() if v is not None})
