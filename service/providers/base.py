"""The provider interface: everything ftq asks of an upstream fine-tuning service.

Two protocols: ``InferenceProvider`` (models, moderation), which every provider offers —
ftq's own inference server included — and ``FineTuningProvider`` (files and jobs at a
managed API: OpenAI, Azure OpenAI and any compatible base URL, through the official SDK).
Adapters know nothing of ftq's jobs, files or tenants; the runners in ``service.jobs``
drive them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class UpstreamJob:
    id: str
    status: str
    model: str | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    result_files: list[str] = field(default_factory=list)
    estimated_finish: int | None = None
    finished_at: int | None = None
    metadata: dict[str, str] | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None


@dataclass(frozen=True)
class UpstreamEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class UpstreamCheckpoint:
    id: str
    created_at: int
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class CreateJobRequest:
    ftq_job_id: str
    model: str
    training_file: str
    validation_file: str | None
    method: dict[str, Any] | None
    hyperparameters: dict[str, Any] | None
    suffix: str | None
    seed: int
    metadata: dict[str, str]
    integrations: list[dict[str, Any]] | None = None


class ErrorKind(enum.StrEnum):
    transient = "transient"  # network, 5xx, timeouts: retry soon
    rate_limited = "rate_limited"  # 429 that clears with time: retry after a delay
    not_found = "not_found"
    permanent = "permanent"  # bad request, quota exhausted, permission: do not retry


class ProviderError(Exception):
    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        raw: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status_code = status_code
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.raw = raw

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.transient, ErrorKind.rate_limited)


class InferenceProvider(Protocol):
    """What every provider offers: calling models and screening text."""

    name: str
    account: str  # stable fingerprint of the credentials: uploads are reused per account

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def chat_completion_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]: ...

    def completion(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def list_models(self) -> list[dict[str, Any]]: ...

    def moderate(self, inputs: list[str], model: str) -> list[dict[str, Any]]: ...


class FineTuningProvider(InferenceProvider, Protocol):
    """A managed fine-tuning API: files and jobs at the provider (OpenAI, Azure OpenAI,
    compatible URLs). ftq's own trainer is not one: it runs through the local runner."""

    def find_uploaded_file(self, marker: str) -> str | None: ...

    def upload_file(self, path: Path, filename: str) -> str: ...

    def file_exists(self, upstream_id: str) -> bool: ...

    def download_file(self, upstream_id: str) -> bytes: ...

    def find_job(self, ftq_job_id: str) -> UpstreamJob | None: ...

    def create_job(self, request: CreateJobRequest, *, timeout: float) -> UpstreamJob: ...

    def get_job(self, upstream_id: str) -> UpstreamJob: ...

    def list_jobs(
        self, *, after: str | None, limit: int, metadata: dict[str, str] | None = None
    ) -> tuple[list[UpstreamJob], bool]:
        """One page of the account's jobs, newest first, and whether more follow; with
        ``metadata``, only jobs carrying every one of those pairs."""
        ...

    def list_new_events(self, upstream_id: str, after_event_id: str | None) -> list[UpstreamEvent]:
        """Events newer than ``after_event_id``, oldest first (a bounded number per call)."""
        ...

    def list_checkpoints(self, upstream_id: str) -> list[UpstreamCheckpoint]: ...

    def cancel_job(self, upstream_id: str) -> UpstreamJob: ...

    def pause_job(self, upstream_id: str) -> UpstreamJob: ...

    def resume_job(self, upstream_id: str) -> UpstreamJob: ...


# Kept for callers that need a fine-tuning provider by its old name.
Provider = FineTuningProvider
