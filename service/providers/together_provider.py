"""Together AI's fine-tuning API as one ``FineTuningProvider`` adapter.

Together is not OpenAI-shaped for fine-tuning (``/fine-tunes`` with ISO timestamps, its own
statuses, LoRA by default, absolute learning rates) but its inference is OpenAI-compatible,
so this adapter speaks its REST API with the same HTTP client the SDK uses (httpx2) and maps
every object to the interface the upstream runner drives. Nothing in ftq changes for it.

Mapping (docs/leaving-openai.md):
  files   POST /files/upload (multipart file, file_name, purpose) · GET /files[/{id}[/content]]
  jobs    POST /fine-tunes · GET /fine-tunes[/{id}] · POST /fine-tunes/{id}/cancel
  events  GET /fine-tunes/{id}/events (no ids: a stable one is derived from each event)
  ckpts   GET /fine-tunes/{id}/checkpoints -> "<output name>:<step>" (Together's from_checkpoint)
  method  supervised/lora -> training_type Lora (rank/alpha kept); full/freeze -> Full;
          dpo -> training_method dpo (beta kept); reinforcement refused
  hyper   n_epochs kept; batch_size "auto" -> "max"; learning_rate_multiplier x 1e-5
          (Together's default rate) -> learning_rate
  status  pending/queued -> queued; running/compressing/uploading/cancel_requested ->
          running; completed -> succeeded; error/user_error -> failed; cancelled -> cancelled
Together jobs carry no metadata, so the ftq job id rides in the suffix (``…-ftq<id tail>``)
and ``find_job`` matches it there; pause and resume do not exist there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from service.providers.base import (
    CreateJobRequest,
    ErrorKind,
    ProviderError,
    UpstreamCheckpoint,
    UpstreamEvent,
    UpstreamJob,
)
from service.providers.streaming import chat_chunks

TOGETHER_BASE_URL = "https://api.together.xyz/v1"
DEFAULT_LEARNING_RATE = 1e-5
MAX_SUFFIX = 40
_STATUS = {
    "pending": "queued",
    "queued": "queued",
    "running": "running",
    "compressing": "running",
    "uploading": "running",
    "cancel_requested": "running",
    "completed": "succeeded",
    "error": "failed",
    "user_error": "failed",
    "cancelled": "cancelled",
}
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class TogetherCredentials:
    api_key: str
    base_url: str = TOGETHER_BASE_URL

    @property
    def account(self) -> str:
        material = f"{self.base_url.rstrip('/')}|{self.api_key}"
        return "tg_" + hashlib.sha256(material.encode()).hexdigest()[:24]


def _unix(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value:
        try:
            return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


def marker_for(ftq_job_id: str) -> str:
    return "ftq" + ftq_job_id.rsplit("-", 1)[-1][-12:]


def _suffix(request: CreateJobRequest) -> str:
    marker = marker_for(request.ftq_job_id)
    head = (request.suffix or "")[: MAX_SUFFIX - len(marker) - 1]
    return f"{head}-{marker}" if head else marker


def _training(request: CreateJobRequest) -> dict[str, Any]:
    method = request.method or {"type": "supervised"}
    kind = method.get("type", "supervised")
    section = method.get(kind) or {}
    hyper = {**(request.hyperparameters or {}), **(section.get("hyperparameters") or {})}
    if kind == "reinforcement":
        raise ProviderError(
            "Together has no reinforcement fine-tuning.",
            kind=ErrorKind.permanent,
            status_code=400,
            code="invalid_method",
            param="method",
        )
    body: dict[str, Any] = {}
    if kind in ("full", "freeze"):
        body["training_type"] = {"type": "Full"}
    else:
        lora: dict[str, Any] = {"type": "Lora"}
        if section.get("rank"):
            lora["lora_r"] = section["rank"]
        if section.get("alpha"):
            lora["lora_alpha"] = section["alpha"]
        if section.get("dropout") is not None:
            lora["lora_dropout"] = section["dropout"]
        body["training_type"] = lora
    if kind == "dpo":
        body["training_method"] = {"method": "dpo"}
        if isinstance(hyper.get("beta"), int | float):
            body["training_method"]["dpo_beta"] = hyper["beta"]
    else:
        body["training_method"] = {"method": "sft"}
    if isinstance(hyper.get("n_epochs"), int):
        body["n_epochs"] = hyper["n_epochs"]
    batch = hyper.get("batch_size")
    body["batch_size"] = batch if isinstance(batch, int) else "max"
    multiplier = hyper.get("learning_rate_multiplier")
    if isinstance(multiplier, int | float):
        body["learning_rate"] = DEFAULT_LEARNING_RATE * float(multiplier)
    return body


def _job(obj: dict[str, Any]) -> UpstreamJob:
    status = _STATUS.get(str(obj.get("status")), "running")
    error = None
    if status == "failed":
        messages = [e.get("message") for e in obj.get("events") or [] if e.get("level") == "error"]
        error = {
            "code": "provider_error",
            "message": (messages[-1] if messages else None) or "Together reported an error.",
            "param": None,
        }
    learning_rate = obj.get("learning_rate")
    return UpstreamJob(
        id=str(obj["id"]),
        status=status,
        model=obj.get("model"),
        fine_tuned_model=obj.get("model_output_name") if status == "succeeded" else None,
        trained_tokens=obj.get("token_count"),
        error=error,
        result_files=[],
        finished_at=_unix(obj.get("updated_at")) if status in _TERMINAL else None,
        hyperparameters={
            "n_epochs": obj.get("n_epochs"),
            "batch_size": obj.get("batch_size"),
            "learning_rate_multiplier": (
                round(float(learning_rate) / DEFAULT_LEARNING_RATE, 6)
                if isinstance(learning_rate, int | float)
                else None
            ),
        },
    )


def _event_id(upstream_id: str, event: dict[str, Any], index: int) -> str:
    material = json.dumps([upstream_id, index, event.get("created_at"), event.get("type")])
    return "tgev-" + hashlib.sha256(material.encode()).hexdigest()[:24]


class TogetherProvider:
    name = "together"

    def __init__(
        self,
        credentials: TogetherCredentials,
        *,
        timeout: float,
        max_retries: int,
        http_client: httpx2.Client | None = None,
    ) -> None:
        self.credentials = credentials
        self.account = credentials.account
        self.max_retries = max_retries
        self._client = http_client or httpx2.Client(timeout=timeout)
        self._base = credentials.base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {credentials.api_key}"}

    # HTTP ------------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        try:
            response = self._client.request(
                method, self._base + path, headers=self._headers, **kwargs
            )
        except httpx2.HTTPError as exc:
            raise ProviderError(f"Together unreachable: {exc}", kind=ErrorKind.transient) from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(
                f"Together answered {path} with a body that is not JSON.",
                kind=ErrorKind.transient,
            ) from exc

    @staticmethod
    def _error(response: httpx2.Response) -> ProviderError:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500]}
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else (body if isinstance(body, dict) else {})
        message = str(error.get("message") or f"Together answered {response.status_code}")
        status = response.status_code
        if status == 429:
            retry = response.headers.get("retry-after")
            return ProviderError(
                message,
                kind=ErrorKind.rate_limited,
                status_code=status,
                code=error.get("code"),
                retry_after=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
                raw=body,
            )
        kind = (
            ErrorKind.transient
            if status >= 500
            else ErrorKind.not_found
            if status == 404
            else ErrorKind.permanent
        )
        return ProviderError(
            message,
            kind=kind,
            status_code=status,
            code=error.get("code"),
            param=error.get("param"),
            raw=body,
        )

    # Inference (OpenAI-compatible) -----------------------------------------------------
    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST", "/chat/completions", json={**body, "stream": False}
        )
        return result

    def chat_completion_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        request = self._client.build_request(
            "POST",
            self._base + "/chat/completions",
            headers=self._headers,
            json={**body, "stream": True},
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise ProviderError(f"Together unreachable: {exc}", kind=ErrorKind.transient) from exc
        try:
            if response.status_code >= 400:
                response.read()
                raise self._error(response)
            if "json" in response.headers.get("content-type", ""):
                # A plain answer to a stream request: stream it (service/providers/streaming.py).
                response.read()
                yield from chat_chunks(response.json())
                return
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                try:
                    yield json.loads(data)
                except ValueError:
                    raise ProviderError(
                        "Together sent a stream event that is not JSON", kind=ErrorKind.permanent
                    ) from None
        finally:
            response.close()

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", "/completions", json=body)
        return result

    def list_models(self) -> list[dict[str, Any]]:
        body = self._json("GET", "/models")
        rows = body.get("data", []) if isinstance(body, dict) else body
        return [
            {
                "id": row.get("id"),
                "object": "model",
                "created": _unix(row.get("created")),
                "owned_by": row.get("organization") or row.get("owned_by") or "together",
            }
            for row in rows or []
            if isinstance(row, dict) and row.get("id")
        ]

    def moderate(self, inputs: list[str], model: str) -> list[dict[str, Any]]:
        raise ProviderError(
            "Together has no moderation endpoint; screen files with another provider.",
            kind=ErrorKind.permanent,
            code="moderation_unavailable",
        )

    # Files -----------------------------------------------------------------------------
    def find_uploaded_file(self, marker: str) -> str | None:
        for item in self._json("GET", "/files").get("data", []):
            if marker in str(item.get("filename") or ""):
                return str(item["id"])
        return None

    def upload_file(self, path: Path, filename: str) -> str:
        with path.open("rb") as handle:
            body = self._json(
                "POST",
                "/files/upload",
                files={"file": (filename, handle, "application/jsonl")},
                data={"purpose": "fine-tune", "file_name": filename},
            )
        return str(body["id"])

    def file_exists(self, upstream_id: str) -> bool:
        try:
            self._json("GET", f"/files/{upstream_id}")
        except ProviderError as error:
            if error.kind == ErrorKind.not_found:
                return False
            raise
        return True

    def download_file(self, upstream_id: str) -> bytes:
        return self._send("GET", f"/files/{upstream_id}/content").content

    # Jobs ------------------------------------------------------------------------------
    def _all_jobs(self) -> list[dict[str, Any]]:
        rows = self._json("GET", "/fine-tunes").get("data", [])
        return sorted(rows, key=lambda r: _unix(r.get("created_at")), reverse=True)

    def find_job(self, ftq_job_id: str) -> UpstreamJob | None:
        marker = marker_for(ftq_job_id)
        for row in self._all_jobs():
            if marker in str(row.get("suffix") or "") or marker in str(
                row.get("model_output_name") or ""
            ):
                return _job(row)
        return None

    def create_job(self, request: CreateJobRequest, *, timeout: float) -> UpstreamJob:
        body: dict[str, Any] = {
            "model": request.model,
            "training_file": request.training_file,
            "suffix": _suffix(request),
            **_training(request),
        }
        if request.validation_file:
            body["validation_file"] = request.validation_file
            body["n_evals"] = 1
        return _job(self._json("POST", "/fine-tunes", json=body, timeout=timeout))

    def get_job(self, upstream_id: str) -> UpstreamJob:
        return _job(self._json("GET", f"/fine-tunes/{upstream_id}"))

    def list_jobs(
        self, *, after: str | None, limit: int, metadata: dict[str, str] | None = None
    ) -> tuple[list[UpstreamJob], bool]:
        # Together lists every job at once and keeps no metadata: no job carries the pairs
        # asked for, and paging happens here.
        if metadata:
            return [], False
        rows = self._all_jobs()
        if after is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        return [_job(r) for r in rows[:limit]], len(rows) > limit

    def list_new_events(self, upstream_id: str, after_event_id: str | None) -> list[UpstreamEvent]:
        rows = self._json("GET", f"/fine-tunes/{upstream_id}/events").get("data", [])
        rows = sorted(enumerate(rows), key=lambda p: (_unix(p[1].get("created_at")), p[0]))
        events = [
            UpstreamEvent(
                id=_event_id(upstream_id, row, index),
                created_at=_unix(row.get("created_at")),
                level="error" if row.get("level") == "error" else "info",
                message=str(row.get("message") or row.get("type") or ""),
                type="message",
                data={"together_type": row.get("type"), "step": row.get("step")}
                if row.get("step") is not None
                else None,
            )
            for index, row in rows
        ]
        ids = [e.id for e in events]
        if after_event_id in ids:
            events = events[ids.index(after_event_id) + 1 :]
        return events[:100]

    def list_checkpoints(self, upstream_id: str) -> list[UpstreamCheckpoint]:
        job = self._json("GET", f"/fine-tunes/{upstream_id}")
        output = job.get("model_output_name") or upstream_id
        rows = self._json("GET", f"/fine-tunes/{upstream_id}/checkpoints").get("data", [])
        return [
            UpstreamCheckpoint(
                id=f"{upstream_id}:{row.get('step')}",
                created_at=_unix(row.get("created_at")),
                step_number=int(row.get("step") or 0),
                fine_tuned_model_checkpoint=f"{output}:{row.get('step')}",
                metrics={"step": row.get("step")},
            )
            for row in rows
            if row.get("step") is not None
        ]

    def cancel_job(self, upstream_id: str) -> UpstreamJob:
        return _job(self._json("POST", f"/fine-tunes/{upstream_id}/cancel"))

    def pause_job(self, upstream_id: str) -> UpstreamJob:
        raise ProviderError(
            "Together cannot pause a fine-tuning job; cancel it instead.",
            kind=ErrorKind.permanent,
            status_code=400,
            code="unsupported",
        )

    def resume_job(self, upstream_id: str) -> UpstreamJob:
        return self.pause_job(upstream_id)
