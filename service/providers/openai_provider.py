"""The ``openai`` provider: OpenAI, Azure OpenAI or any compatible base URL.

Every call goes through the official SDK; pointing ``base_url`` at the sandbox, at OpenAI or
at a gateway changes nothing else. Reads use the SDK's own retries; the job create runs with
``max_retries=0`` because a retried create whose response was lost would start a second
paid job — the submission service looks the job up by its metadata tag before any retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
from openai import OpenAI

from service import netguard
from service.providers.base import (
    CreateJobRequest,
    ErrorKind,
    ProviderError,
    UpstreamCheckpoint,
    UpstreamEvent,
    UpstreamJob,
)
from service.providers.streaming import chunks_from_raw

FTQ_JOB_TAG = "ftq_job_id"
_EVENTS_PAGE = 100
_MAX_EVENT_PAGES = 20  # 2,000 events a poll at most; the rest comes at the next one
# 429 codes that will not clear within seconds (daily caps, exhausted credit).
_NON_TRANSIENT_429_CODES = {
    "insufficient_quota",
    "daily_rate_limit_exceeded",
    "billing_hard_limit_reached",
}


@dataclass(frozen=True)
class OpenAICredentials:
    base_url: str
    api_key: str
    organization: str | None = None
    project: str | None = None

    @property
    def account(self) -> str:
        material = f"{self.base_url}|{self.organization or ''}|{self.project or ''}|{self.api_key}"
        return "oa_" + hashlib.sha256(material.encode()).hexdigest()[:24]


def _retry_after(response: Any) -> float | None:
    if response is None:
        return None
    headers = response.headers
    if ms := headers.get("retry-after-ms"):
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    if seconds := headers.get("retry-after"):
        try:
            return float(seconds)
        except ValueError:
            return None
    return None


def translate_error(exc: Exception) -> ProviderError:
    """Classify an SDK exception once, so callers decide on kinds, not on exception types."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", body) if isinstance(body, dict) else {}
        code = exc.code or (error.get("code") if isinstance(error, dict) else None)
        message = (error.get("message") if isinstance(error, dict) else None) or exc.message
        status = exc.status_code
        if status == 429:
            kind = (
                ErrorKind.permanent if code in _NON_TRANSIENT_429_CODES else ErrorKind.rate_limited
            )
        elif status == 404:
            kind = ErrorKind.not_found
        elif status >= 500 or status in (408, 409):
            kind = ErrorKind.transient
        else:
            kind = ErrorKind.permanent
        return ProviderError(
            message,
            kind=kind,
            status_code=status,
            code=code,
            param=exc.param,
            retry_after=_retry_after(exc.response),
            raw=body or None,
        )
    if isinstance(exc, openai.APIConnectionError) and (reason := netguard.refusal_in(exc)):
        # The SSRF policy refused the address: retrying will not change the answer.
        return ProviderError(reason, kind=ErrorKind.permanent)
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return ProviderError(f"provider unreachable: {exc}", kind=ErrorKind.transient)
    return ProviderError(str(exc), kind=ErrorKind.transient)


def _job(obj: Any) -> UpstreamJob:
    error = obj.error.model_dump() if getattr(obj, "error", None) else None
    if error and not any(error.values()):
        error = None
    return UpstreamJob(
        id=obj.id,
        status=obj.status,
        model=obj.model,
        fine_tuned_model=obj.fine_tuned_model,
        trained_tokens=obj.trained_tokens,
        error=error,
        result_files=list(obj.result_files or []),
        estimated_finish=obj.estimated_finish,
        finished_at=obj.finished_at,
        metadata=dict(obj.metadata) if obj.metadata else None,
        hyperparameters=obj.hyperparameters.model_dump() if obj.hyperparameters else None,
        method=obj.method.model_dump(exclude_none=True) if getattr(obj, "method", None) else None,
    )


class OpenAIInference:
    """Inference through an OpenAI-compatible server: all that ftq's own inference server
    (or vLLM) offers, and what every fine-tuning provider offers too."""

    name = "openai"

    def __init__(self, credentials: OpenAICredentials, *, timeout: float, max_retries: int) -> None:
        self.credentials = credentials
        self.account = credentials.account
        self._client = OpenAI(
            base_url=credentials.base_url,
            api_key=credentials.api_key,
            organization=credentials.organization,
            project=credentials.project,
            timeout=timeout,
            max_retries=max_retries,
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc

    # Inference and screening ---------------------------------------------------------------
    def _chat_params(self, body: dict[str, Any]) -> dict[str, Any]:
        # Pass fields through untouched: whatever the caller's SDK sent, the upstream sees.
        rest = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        return {"model": body["model"], "messages": body["messages"], "extra_body": rest}

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        result = self._call(self._client.chat.completions.create, **self._chat_params(body))
        return result.model_dump(exclude_unset=True)

    def chat_completion_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # Raw first: an upstream may answer a stream request with plain JSON (streaming.py).
        raw = self._call(
            self._client.chat.completions.with_raw_response.create,
            stream=True,
            **self._chat_params(body),
        )
        try:
            yield from chunks_from_raw(raw, object_type="chat.completion")
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise translate_error(exc) from exc

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in body.items() if k not in ("model", "prompt", "stream")}
        result = self._call(
            self._client.completions.create,
            model=body["model"],
            prompt=body["prompt"],
            extra_body=rest,
        )
        return result.model_dump(exclude_unset=True)

    def list_models(self) -> list[dict[str, Any]]:
        return [m.model_dump() for m in self._call(self._client.models.list).data]

    def moderate(self, inputs: list[str], model: str) -> list[dict[str, Any]]:
        result = self._call(self._client.moderations.create, input=inputs, model=model)
        return [r.model_dump(by_alias=True) for r in result.results]


class OpenAIProvider(OpenAIInference):
    """Fine-tuning through the official SDK: OpenAI, Azure OpenAI, compatible base URLs."""

    name = "openai"

    # Files -----------------------------------------------------------------------------
    def find_uploaded_file(self, marker: str) -> str | None:
        page = self._call(self._client.files.list, purpose="fine-tune", limit=10000)
        for item in page.data:
            if marker in (item.filename or "") and item.status != "error":
                return str(item.id)
        return None

    def upload_file(self, path: Path, filename: str) -> str:
        from service.config import get_settings

        settings = get_settings()
        size = path.stat().st_size
        if size > settings.provider_upload_part_threshold_bytes:
            # Over the Files API's limit: the Uploads API, in parts, completed in order.
            upload = self._call(
                self._client.uploads.upload_file_chunked,
                file=path,
                mime_type="text/jsonl",
                purpose="fine-tune",
                filename=filename,
                bytes=size,
                part_size=settings.provider_upload_part_bytes,
            )
            if upload.file is None:
                raise ProviderError(
                    f"upload {upload.id} completed without a file", kind=ErrorKind.transient
                )
            return str(upload.file.id)
        with path.open("rb") as handle:
            created = self._call(
                self._client.files.create, file=(filename, handle), purpose="fine-tune"
            )
        return str(created.id)

    def file_exists(self, upstream_id: str) -> bool:
        """Whether an earlier upload is still there (a provider account can lose files)."""
        try:
            self._call(self._client.files.retrieve, upstream_id)
        except ProviderError as error:
            if error.kind == ErrorKind.not_found:
                return False
            raise
        return True

    def download_file(self, upstream_id: str) -> bytes:
        return bytes(self._call(self._client.files.content, upstream_id).read())

    # Jobs ------------------------------------------------------------------------------
    def find_job(self, ftq_job_id: str) -> UpstreamJob | None:
        page = self._call(
            self._client.fine_tuning.jobs.list, metadata={FTQ_JOB_TAG: ftq_job_id}, limit=10
        )
        matches = [j for j in page.data if (j.metadata or {}).get(FTQ_JOB_TAG) == ftq_job_id]
        return _job(matches[0]) if matches else None

    def create_job(self, request: CreateJobRequest, *, timeout: float) -> UpstreamJob:
        params: dict[str, Any] = {
            "model": request.model,
            "training_file": request.training_file,
            "seed": request.seed,
            "metadata": {**request.metadata, FTQ_JOB_TAG: request.ftq_job_id},
        }
        if request.validation_file:
            params["validation_file"] = request.validation_file
        if request.method:
            params["method"] = request.method
        if request.hyperparameters:
            params["hyperparameters"] = request.hyperparameters
        if request.suffix:
            params["suffix"] = request.suffix
        if request.integrations:
            params["integrations"] = request.integrations
        client = self._client.with_options(max_retries=0, timeout=timeout)
        return _job(self._call(client.fine_tuning.jobs.create, **params))

    def list_jobs(
        self, *, after: str | None, limit: int, metadata: dict[str, str] | None = None
    ) -> tuple[list[UpstreamJob], bool]:
        kwargs: dict[str, Any] = {"limit": limit}
        if after:
            kwargs["after"] = after
        if metadata:
            kwargs["metadata"] = metadata  # the SDK sends metadata[k]=v, as OpenAI filters
        page = self._call(self._client.fine_tuning.jobs.list, **kwargs)
        return [_job(j) for j in page.data], bool(page.has_more)

    def get_job(self, upstream_id: str) -> UpstreamJob:
        return _job(self._call(self._client.fine_tuning.jobs.retrieve, upstream_id))

    def list_new_events(self, upstream_id: str, after_event_id: str | None) -> list[UpstreamEvent]:
        # The API lists newest first and pages towards older events, so walk back until
        # the newest event we already hold, then return the new ones oldest first.
        # A provider whose cursor does not move (or that claims more pages forever) must not
        # turn one poll into an endless loop: pages are capped, and a page that brings no
        # event we have not seen ends the walk. The rest arrives at the next poll.
        collected: list[UpstreamEvent] = []
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(_MAX_EVENT_PAGES):
            kwargs: dict[str, Any] = {"limit": _EVENTS_PAGE}
            if cursor:
                kwargs["after"] = cursor
            page = self._call(self._client.fine_tuning.jobs.list_events, upstream_id, **kwargs)
            reached_known = False
            fresh = 0
            for item in page.data:
                if item.id == after_event_id:
                    reached_known = True
                    break
                if item.id in seen:
                    continue
                seen.add(item.id)
                fresh += 1
                collected.append(
                    UpstreamEvent(
                        id=item.id,
                        created_at=item.created_at,
                        level=item.level,
                        message=item.message,
                        type=item.type or "message",
                        data=item.data if isinstance(item.data, dict) else None,
                    )
                )
            if reached_known or not page.has_more or not page.data or not fresh:
                break
            if page.data[-1].id == cursor:
                break
            cursor = page.data[-1].id
        collected.reverse()
        return collected

    def list_checkpoints(self, upstream_id: str) -> list[UpstreamCheckpoint]:
        page = self._call(self._client.fine_tuning.jobs.checkpoints.list, upstream_id, limit=100)
        return [
            UpstreamCheckpoint(
                id=c.id,
                created_at=c.created_at,
                step_number=c.step_number,
                fine_tuned_model_checkpoint=c.fine_tuned_model_checkpoint,
                metrics=c.metrics.model_dump(exclude_none=True) if c.metrics else None,
            )
            for c in page.data
        ]

    def cancel_job(self, upstream_id: str) -> UpstreamJob:
        return _job(self._call(self._client.fine_tuning.jobs.cancel, upstream_id))

    def pause_job(self, upstream_id: str) -> UpstreamJob:
        return _job(self._call(self._client.fine_tuning.jobs.pause, upstream_id))

    def resume_job(self, upstream_id: str) -> UpstreamJob:
        return _job(self._call(self._client.fine_tuning.jobs.resume, upstream_id))
