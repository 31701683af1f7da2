"""Does a file's format fit the job's model and method?

Rule: a training (or validation) file must be in the format its job's model and method train
on, checked before anything is queued, because the provider otherwise accepts the job and
fails it minutes later:

- ``babbage-002`` and ``davinci-002`` (and their fine-tunes) train on prompt/completion only;
- method ``dpo`` trains on preference data (input, preferred_output, non_preferred_output);
- preference data needs method ``dpo``: the default method is supervised;
- method ``reinforcement`` trains on chat data;
- prompt/completion data for a chat model is not a misfit: ftq converts it to chat (a warning).

Local models train chat and prompt/completion data with ``full``/``freeze``/``lora`` (their
names for supervised) and preference data with ``dpo``. A file whose format is not known yet
(still being validated, or unreadable) has no misfit here: its own report decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.errors import InvalidRequest
from service.files.validation import formats as fmt
from service.files.validation.report import FileRole, Finding
from service.files.validation.tokens import base_model

if TYPE_CHECKING:
    from service.files.models import File

COMPLETIONS_ONLY_MODELS = ("babbage-002", "davinci-002")
SUPERVISED_METHODS = frozenset({"supervised", "full", "freeze", "lora"})
FORMAT_LABELS = {
    fmt.CHAT: "chat (messages)",
    fmt.PROMPT_COMPLETION: "prompt/completion",
    fmt.DPO: "preference (DPO: input, preferred_output, non_preferred_output)",
}
FORMAT_MODEL_MISMATCH = "format_model_mismatch"
FORMAT_METHOD_MISMATCH = "format_method_mismatch"
CONVERTED_TO_CHAT = "converted_to_chat"


@dataclass(frozen=True)
class Misfit:
    code: str
    message: str
    suggestion: str


def is_completions_only(model: str) -> bool:
    return base_model(model).startswith(COMPLETIONS_ONLY_MODELS)


def misfit(
    file_format: str | None, model: str, method_type: str | None, *, local: bool = False
) -> Misfit | None:
    """The first way ``file_format`` does not fit ``model`` and ``method_type``, or None."""
    if file_format not in FORMAT_LABELS:
        return None
    method = method_type or "supervised"
    label = FORMAT_LABELS[file_format]
    if not local and is_completions_only(model) and file_format != fmt.PROMPT_COMPLETION:
        return Misfit(
            FORMAT_MODEL_MISMATCH,
            f"{model} is a completions model and trains on prompt/completion data only; "
            f"this file is {label}.",
            "Use a chat model such as gpt-4o-mini-2024-07-18 for chat or preference data, or "
            'give this model {"prompt": ..., "completion": ...} examples.',
        )
    if method == "dpo" and file_format != fmt.DPO:
        return Misfit(
            FORMAT_METHOD_MISMATCH,
            f"Method dpo trains on preference data (input, preferred_output, "
            f"non_preferred_output); this file is {label}.",
            "Upload preference pairs for dpo, or use the supervised method for this file.",
        )
    if method == "reinforcement" and file_format != fmt.CHAT:
        return Misfit(
            FORMAT_METHOD_MISMATCH,
            f"Method reinforcement trains on chat data (messages); this file is {label}.",
            "Upload chat examples with the fields your grader reads.",
        )
    if method in SUPERVISED_METHODS and file_format == fmt.DPO:
        return Misfit(
            FORMAT_METHOD_MISMATCH,
            f"This file is {label}, which method {method} cannot train on"
            + (" (supervised is the default method)." if method_type is None else "."),
            'Create the job with method {"type": "dpo", "dpo": {...}}, or upload chat data.',
        )
    return None


def fit_findings(
    file_format: str | None,
    model: str,
    method_type: str | None,
    *,
    local: bool = False,
    role: FileRole = "training",
) -> list[Finding]:
    """The pre-flight report's view: a misfit is an error (the job would be refused); prompt/
    completion data that ftq will convert for a chat model is a warning."""
    problem = misfit(file_format, model, method_type, local=local)
    if problem is not None:
        return [
            Finding(
                line=None,
                code=problem.code,
                severity="error",
                message=problem.message,
                suggestion=problem.suggestion,
                file=role,
            )
        ]
    if (
        not local
        and file_format == fmt.PROMPT_COMPLETION
        and not is_completions_only(model)
        and (method_type or "supervised") in SUPERVISED_METHODS
    ):
        return [
            Finding(
                line=None,
                code=CONVERTED_TO_CHAT,
                severity="warning",
                message=f"{model} is a chat model: ftq will convert this prompt/completion data "
                "to chat (user -> assistant) when the job starts.",
                suggestion="Upload chat-format data (messages) to control the conversion.",
                file=role,
            )
        ]
    return []


def check_fits(
    file_format: str | None,
    model: str,
    method_type: str | None,
    *,
    param: str = "training_file",
    file_id: str | None = None,
    local: bool = False,
) -> None:
    """Raises InvalidRequest (400, ``param``, code ``format_model_mismatch`` or
    ``format_method_mismatch``) when the format does not fit."""
    problem = misfit(file_format, model, method_type, local=local)
    if problem is None:
        return
    subject = f"File {file_id}: " if file_id else ""
    raise InvalidRequest(
        f"{subject}{problem.message} {problem.suggestion}", param=param, code=problem.code
    )


def check_job_files(
    training: File,
    validation: File | None,
    model: str,
    method_type: str | None,
    *,
    local: bool = False,
) -> None:
    """``check_fits`` for a job's files whose reports are in (``File.format`` is set)."""
    check_fits(
        training.format, model, method_type, param="training_file", file_id=training.id, local=local
    )
    if validation is not None:
        check_fits(
            validation.format,
            model,
            method_type,
            param="validation_file",
            file_id=validation.id,
            local=local,
        )


@dataclass(frozen=True)
class JobMisfit:
    param: str  # "training_file" or "validation_file"
    code: str
    message: str


def job_misfit(
    training: File,
    validation: File | None,
    model: str,
    method_type: str | None,
    *,
    local: bool = False,
) -> JobMisfit | None:
    """For a job whose files' reports arrived after its create (admission): the first file
    that does not fit, to fail the job with ``data_format`` instead of sending it upstream."""
    for param, record in (("training_file", training), ("validation_file", validation)):
        if record is None:
            continue
        problem = misfit(record.format, model, method_type, local=local)
        if problem is not None:
            return JobMisfit(
                param,
                problem.code,
                f"File {record.id}: {problem.message} {problem.suggestion}",
            )
    return None
