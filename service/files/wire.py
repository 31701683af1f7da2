"""Files and their pre-flight reports as typed wire objects.

The rule: what the Files API answers and what ``file.validated`` webhooks carry are these
classes. ``FileObject`` is OpenAI's ``file`` (``openai.types.FileObject``) field for field;
ftq's validation summary is an added, optional field the SDK keeps in ``model_extra``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from service.files.validation.report import DatasetFormat, Report, Verdict

FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]
ValidationStatus = Literal["pending", "running", "completed", "error", "skipped"]


class FileValidationSummary(BaseModel):
    status: ValidationStatus
    verdict: Verdict | None = None
    format: DatasetFormat | None = None
    examples: int | None = None


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None
    # ftq's added fields.
    sha256: str | None = None
    validation: FileValidationSummary | None = None


class FileDeletedObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class ValidationFailure(BaseModel):
    """The report of a file the validator could not read to the end."""

    error: str


class FileValidationObject(BaseModel):
    object: Literal["file.validation"] = "file.validation"
    file_id: str
    status: ValidationStatus
    # Set when the report was re-targeted for a job's model (and method): ?model=&method=.
    model: str | None = None
    method: str | None = None
    verdict: Verdict | None = None
    report: Report | ValidationFailure | None = None


class FileSplitObject(BaseModel):
    object: Literal["file.split"] = "file.split"
    source_file: str
    validation_fraction: float
    seed: int
    training_file: FileObject
    validation_file: FileObject


class SampledExample(BaseModel):
    line: int
    example: dict[str, Any]


class FileSampleList(BaseModel):
    model_config = ConfigDict(title="FileSampleList")

    object: Literal["list"] = "list"
    data: list[SampledExample]
    has_more: bool = False
    n: int
    seed: int


class FileUploadForm(BaseModel):
    """``POST /v1/files`` (multipart/form-data): documents the form; the route streams it."""

    file: bytes
    purpose: Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
