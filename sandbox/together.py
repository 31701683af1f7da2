"""A Together AI stand-in under ``/together/v1``, following Together's published shapes.

Files (``POST /files/upload`` multipart, list, retrieve, content), fine-tunes (create,
list, retrieve, cancel, events, checkpoints) with ISO-8601 timestamps and Together's
statuses, ``GET /models`` as a bare array, and OpenAI-compatible chat completions. Jobs move
on the wall clock (pending, running, completed within about two seconds); a fine-tuned model
answers with the training example whose user message matches, like the OpenAI sandbox.
State lives in memory per app. Imports nothing of ftq.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

router = APIRouter(prefix="/together/v1", tags=["together"])

BASE_MODELS = ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "Qwen/Qwen3-8B")
RUNNING_AFTER, DONE_AFTER = 0.5, 2.0


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}},
        status_code=status,
    )


@dataclass
class _File:
    id: str
    filename: str
    content: bytes
    created_at: float


@dataclass
class _Job:
    id: str
    body: dict[str, Any]
    created_at: float
    cancelled_at: float | None = None
    answers: dict[str, str] = field(default_factory=dict)

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        age = now - self.created_at
        return "pending" if age < RUNNING_AFTER else "running" if age < DONE_AFTER else "completed"

    @property
    def output_name(self) -> str:
        return f"sandbox-user/{self.body['model'].split('/')[-1]}-{self.body.get('suffix', '')}"

    def events(self, now: float) -> list[dict[str, Any]]:
        status = self.status(now)
        rows: list[tuple[str, float, str, int | None]] = [
            ("job_pending", self.created_at, "Fine tune request created", None)
        ]
        if status != "pending" or self.cancelled_at:
            rows.append(("job_start", self.created_at + RUNNING_AFTER, "Job started", None))
        if status == "completed":
            end = self.created_at + DONE_AFTER
            rows.append(("checkpoint_save", end - 0.1, "Checkpoint saved at step 1", 1))
            rows.append(("job_complete", end, "Job finished", 2))
        if status == "cancelled":
            rows.append(("job_stopped", self.cancelled_at or now, "Job cancelled", None))
        return [
            {
                "object": "fine-tune-event",
                "created_at": _iso(at),
                "message": message,
                "type": kind,
                "step": step,
                "level": "info",
            }
            for kind, at, message, step in rows
        ]

    def to_dict(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        return {
            "id": self.id,
            "status": status,
            "model": self.body["model"],
            "model_output_name": self.output_name,
            "suffix": self.body.get("suffix"),
            "training_file": self.body["training_file"],
            "validation_file": self.body.get("validation_file"),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(now if status != "completed" else self.created_at + DONE_AFTER),
            "n_epochs": self.body.get("n_epochs", 1),
            "batch_size": self.body.get("batch_size", "max"),
            "learning_rate": self.body.get("learning_rate", 1e-5),
            "training_type": self.body.get("training_type", {"type": "Lora"}),
            "training_method": self.body.get("training_method", {"method": "sft"}),
            "token_count": 1000 if status == "completed" else 0,
            "total_price": 0,
            "events": self.events(now),
        }


@dataclass
class _State:
    files: dict[str, _File] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _state(request: Request) -> _State:
    state = getattr(request.app.state, "together", None)
    if state is None:
        state = request.app.state.together = _State()
    return state


def _answers(content: bytes) -> dict[str, str]:
    answers = {}
    for line in content.decode("utf-8", "replace").splitlines():
        try:
            messages = json.loads(line).get("messages") or []
        except (ValueError, AttributeError):
            continue
        users = [m["content"] for m in messages if m.get("role") == "user"]
        replies = [m["content"] for m in messages if m.get("role") == "assistant"]
        if users and replies:
            answers[str(users[-1])] = str(replies[-1])
    return answers


@router.post("/files/upload")
async def upload(request: Request) -> Any:
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        return _error(400, "file is required")
    content = await upload.read()
    record = _File(
        id=f"file-{uuid.uuid4()}",
        filename=str(form.get("file_name") or upload.filename or "data.jsonl"),
        content=content,
        created_at=time.time(),
    )
    state = _state(request)
    with state.lock:
        state.files[record.id] = record
    return _file_dict(record)


def _file_dict(record: _File) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "created_at": int(record.created_at),
        "type": "jsonl",
        "purpose": "fine-tune",
        "filename": record.filename,
        "bytes": len(record.content),
        "line_count": record.content.count(b"\n"),
        "processed": True,
    }


@router.get("/files")
def list_files(request: Request) -> dict[str, Any]:
    return {"data": [_file_dict(f) for f in _state(request).files.values()]}


@router.get("/files/{file_id}")
def get_file(file_id: str, request: Request) -> Any:
    record = _state(request).files.get(file_id)
    return _file_dict(record) if record else _error(404, f"File {file_id} not found")


@router.get("/files/{file_id}/content")
def file_content(file_id: str, request: Request) -> Any:
    record = _state(request).files.get(file_id)
    if record is None:
        return _error(404, f"File {file_id} not found")
    return Response(record.content, media_type="application/octet-stream")


@router.post("/fine-tunes")
async def create_job(request: Request) -> Any:
    body = await request.json()
    state = _state(request)
    training = state.files.get(str(body.get("training_file")))
    if training is None:
        return _error(400, "training_file not found", "invalid_file")
    if body.get("model") not in BASE_MODELS:
        return _error(400, f"Model {body.get('model')} is not available for fine-tuning")
    job = _Job(
        id=f"ft-{uuid.uuid4()}",
        body=body,
        created_at=time.time(),
        answers=_answers(training.content),
    )
    with state.lock:
        state.jobs[job.id] = job
    return job.to_dict(time.time())


@router.get("/fine-tunes")
def list_jobs(request: Request) -> dict[str, Any]:
    now = time.time()
    return {"data": [j.to_dict(now) for j in _state(request).jobs.values()]}


@router.get("/fine-tunes/{job_id}")
def get_job(job_id: str, request: Request) -> Any:
    job = _state(request).jobs.get(job_id)
    return job.to_dict(time.time()) if job else _error(404, f"Fine-tune {job_id} not found")


@router.post("/fine-tunes/{job_id}/cancel")
def cancel_job(job_id: str, request: Request) -> Any:
    job = _state(request).jobs.get(job_id)
    if job is None:
        return _error(404, f"Fine-tune {job_id} not found")
    if job.status(time.time()) not in ("completed", "cancelled"):
        job.cancelled_at = time.time()
    return job.to_dict(time.time())


@router.get("/fine-tunes/{job_id}/events")
def job_events(job_id: str, request: Request) -> Any:
    job = _state(request).jobs.get(job_id)
    return {"data": job.events(time.time())} if job else _error(404, "not found")


@router.get("/fine-tunes/{job_id}/checkpoints")
def job_checkpoints(job_id: str, request: Request) -> Any:
    job = _state(request).jobs.get(job_id)
    if job is None:
        return _error(404, "not found")
    if job.status(time.time()) != "completed":
        return {"data": []}
    at = _iso(job.created_at + DONE_AFTER - 0.1)
    return {
        "data": [
            {
                "step": 1,
                "created_at": at,
                "path": f"s3://sandbox/{job.id}/1",
                "checkpoint_type": "Intermediate",
            }
        ]
    }


@router.get("/models")
def list_models(request: Request) -> list[dict[str, Any]]:
    now = time.time()
    done = [j for j in _state(request).jobs.values() if j.status(now) == "completed"]
    return [
        {"id": m, "object": "model", "created": 0, "type": "chat", "organization": "sandbox"}
        for m in BASE_MODELS
    ] + [
        {
            "id": j.output_name,
            "object": "model",
            "created": 0,
            "type": "chat",
            "organization": "you",
        }
        for j in done
    ]


@router.post("/chat/completions")
async def chat(request: Request) -> Any:
    body = await request.json()
    model = str(body.get("model"))
    now = time.time()
    jobs = [j for j in _state(request).jobs.values() if j.status(now) == "completed"]
    tuned = next((j for j in jobs if j.output_name == model), None)
    if tuned is None and model not in BASE_MODELS:
        return _error(404, f"Unable to access model {model}", "model_not_available")
    users = [m.get("content") for m in body.get("messages") or [] if m.get("role") == "user"]
    question = str(users[-1]) if users else ""
    answer = (tuned.answers.get(question) if tuned else None) or "I am a Together sandbox model."
    completion = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(now),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    if not body.get("stream"):
        return completion

    def stream() -> Any:
        chunk = {
            **completion,
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
        }
        yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")
