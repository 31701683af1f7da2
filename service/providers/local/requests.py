"""A job's stored ``method`` and hyperparameters as the local trainer reads them.

Pure mapping, no job or database: the local runner calls it at create (to refuse what a
training worker would refuse) and again when a worker starts the run.
"""

from __future__ import annotations

from typing import Any

from service.providers.local.spec import Hyperparameters, TrainingMethod, method_from_job

# ftq's own method types, which only the local provider trains (OpenAI's ``supervised``
# means ``full`` there, and ``dpo`` is trained by both).
LOCAL_METHOD_TYPES = frozenset({"full", "freeze", "lora"})


def training_method(
    method: dict[str, Any] | None, hyperparameters: dict[str, Any] | None
) -> tuple[TrainingMethod, Hyperparameters]:
    """The trainer's method and hyperparameters for a job's stored ``method`` (full, freeze,
    lora, dpo, or OpenAI's supervised = full); ValueError (pydantic's ValidationError
    included) names what is wrong."""
    return method_from_job(method, hyperparameters)
