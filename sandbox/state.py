"""Thread-safe in-memory state of the sandbox: files, uploads, jobs and models.

Jobs progress lazily: every public method first applies the milestones (see lifecycle.py)
whose effective time has passed, so reads always see the state the wall clock implies.

A request's cost must not grow with the number of jobs held (benchmarks keep 10,000 active):
due milestones come off a heap keyed by their wall time, and metadata filters read an index.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.datasets import DataError, Dataset, Example, parse_dataset
from sandbox.errors import APIError, bad_request, not_found
from sandbox.ids import new_id, random_token
from sandbox.lifecycle import JobPlan, Milestone, plan_job, resolve_hyperparameters, results_csv
from sandbox.pagination import cursor_page
from sandbox.validation import JobRequest

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision")
MODEL_ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}
MODERATION_MODELS = (
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
)
SHUTDOWN_DATE = "2027-01-14"
_BASE_MODEL_CREATED = 1_700_000_000
_UPLOAD_TTL_SECONDS = 3600
_MAX_UPLOAD_BYTES = 8 * 1024**3
_MAX_PART_BYTES = 64 * 1024**2
_BATCH_FILE_TTL_SECONDS = 30 * 24 * 3600


def shutdown_date(model: str) -> str | None:
    return SHUTDOWN_DATE if model.startswith(("gpt-4o", "gpt-4.1")) else None


@dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    expires_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class UploadRecord:
    id: str
    filename: str
    purpose: str
    size: int
    mime_type: str
    created_at: int
    expires_at: int
    file_expires_after: int | None
    status: str = "pending"
    parts: dict[str, bytes] = field(default_factory=dict)
    file: FileRecord | None = None


@dataclass
class EventRecord:
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job.event",
            "created_at": self.created_at,
            "level": self.level,
            "message": self.message,
            "type": self.type,
            "data": self.data,
        }


@dataclass
class CheckpointRecord:
    id: str
    created_at: int
    job_id: str
    model: str
    step: int
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job.checkpoint",
            "created_at": self.created_at,
            "fine_tuned_model_checkpoint": self.model,
            "fine_tuning_job_id": self.job_id,
            "step_number": self.step,
            "metrics": self.metrics,
        }


@dataclass
class JobRecord:
    id: str
    created_at: float
    request: JobRequest
    model: str
    hyperparameters: dict[str, Any]
    seed: int
    planned_model: str
    plan: JobPlan
    dataset: Dataset | None
    phase_status: str = "validating_files"
    status_override: str | None = None  # "cancelled" or "failed"/"succeeded" once terminal
    next_milestone: int = 0
    progress_offset: float = 0.0  # effective seconds elapsed before segment_start
    segment_start: float = 0.0  # wall time the effective clock (re)started
    paused: bool = False
    finished_at: int | None = None
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    result_files: list[str] = field(default_factory=list)
    trained_tokens: int | None = None
    events: list[EventRecord] = field(default_factory=list)
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    # (status, wall time) of every status the plan moved the job to, for benchmarks.
    status_changes: list[tuple[str, float]] = field(default_factory=list)
    # Bumped whenever the job's clock changes, so older heap entries are recognised as stale.
    schedule_version: int = 0

    @property
    def terminal(self) -> bool:
        return self.status_override in TERMINAL


@dataclass
class ModelRecord:
    id: str
    created: int
    owned_by: str
    job_id: str


def _short_org(organization: str) -> str:
    # The model name is colon-separated, so an org id must not contain one.
    return organization.replace(":", "-") or "sandbox"


class Store:
    """All sandbox state behind one lock; the lock is re-entrant and held only briefly."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self._files: dict[str, FileRecord] = {}
        self._uploads: dict[str, UploadRecord] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._ft_models: dict[str, ModelRecord] = {}
        # Inference name (fine-tuned model or checkpoint) -> job whose data answers it.
        self._inference: dict[str, str] = {}
        self._creates_by_ftq_job_id: Counter[str] = Counter()
        self._jobs_created = 0
        # (wall time of the next milestone, schedule_version, job id): a min-heap.
        self._due: list[tuple[float, int, str]] = []
        self._job_order: list[str] = []  # creation order, for unfiltered list pages
        self._job_position: dict[str, int] = {}
        self._by_metadata: dict[tuple[str, str], list[str]] = {}
        self._first_create_at: dict[str, float] = {}

    def reset(self, config: SandboxConfig) -> None:
        with self._lock:
            self.config = config
            self._clear()

    # --- files -----------------------------------------------------------------------------

    def add_file(
        self,
        content: bytes,
        filename: str,
        purpose: str,
        expires_after_seconds: int | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            return self._add_file(content, filename, purpose, expires_after_seconds).to_dict()

    def _add_file(
        self,
        content: bytes,
        filename: str,
        purpose: str,
        expires_after_seconds: int | None,
        created_at: float | None = None,
    ) -> FileRecord:
        now = int(self.clock() if created_at is None else created_at)
        if expires_after_seconds is None and purpose == "batch":
            expires_after_seconds = _BATCH_FILE_TTL_SECONDS
        record = FileRecord(
            id=new_id("file-"),
            filename=filename,
            purpose=purpose,
            content=content,
            created_at=now,
            expires_at=now + expires_after_seconds if expires_after_seconds else None,
        )
        self._files[record.id] = record
        return record

    def _file(self, file_id: str) -> FileRecord:
        record = self._files.get(file_id)
        if record is None:
            raise not_found(f"No such File object: {file_id}", param="id", code="file_not_found")
        return record

    def list_files(
        self, *, purpose: str | None, order: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            self._advance_all()
            items = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
            if order == "desc":
                items.reverse()
            page, has_more = cursor_page(items, after=after, limit=limit, key=lambda f: f.id)
            return [f.to_dict() for f in page], has_more

    def get_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            return self._file(file_id).to_dict()

    def file_content(self, file_id: str) -> tuple[bytes, str]:
        with self._lock:
            self._advance_all()
            record = self._file(file_id)
            return record.content, record.filename

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            self._file(file_id)
            del self._files[file_id]
            return {"id": file_id, "object": "file", "deleted": True}

    # --- uploads ---------------------------------------------------------------------------

    def create_upload(
        self,
        *,
        filename: str,
        purpose: str,
        size: int,
        mime_type: str,
        file_expires_after: int | None,
    ) -> dict[str, Any]:
        if size > _MAX_UPLOAD_BYTES:
            raise bad_request("An Upload can be at most 8 GB.", param="bytes")
        with self._lock:
            now = int(self.clock())
            record = UploadRecord(
                id=new_id("upload_"),
                filename=filename,
                purpose=purpose,
                size=size,
                mime_type=mime_type,
                created_at=now,
                expires_at=now + _UPLOAD_TTL_SECONDS,
                file_expires_after=file_expires_after,
            )
            self._uploads[record.id] = record
            return self._upload_dict(record)

    def _upload(self, upload_id: str) -> UploadRecord:
        record = self._uploads.get(upload_id)
        if record is None:
            raise not_found(f"No such Upload object: {upload_id}", param="upload_id", code=None)
        if record.status == "pending" and self.clock() > record.expires_at:
            record.status = "expired"
        return record

    def _upload_dict(self, record: UploadRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "object": "upload",
            "bytes": record.size,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "filename": record.filename,
            "purpose": record.purpose,
            "status": record.status,
            "file": record.file.to_dict() if record.file else None,
        }

    def _pending_upload(self, upload_id: str) -> UploadRecord:
        record = self._upload(upload_id)
        if record.status != "pending":
            raise bad_request(
                f"Upload {upload_id} is {record.status}; only pending uploads can change.",
                param="upload_id",
            )
        return record

    def add_upload_part(self, upload_id: str, data: bytes) -> dict[str, Any]:
        if len(data) > _MAX_PART_BYTES:
            raise bad_request("A part can be at most 64 MB.", param="data")
        with self._lock:
            record = self._pending_upload(upload_id)
            part_id = new_id("part_")
            record.parts[part_id] = data
            return {
                "id": part_id,
                "object": "upload.part",
                "created_at": int(self.clock()),
                "upload_id": upload_id,
            }

    def complete_upload(
        self, upload_id: str, part_ids: list[str], md5: str | None
    ) -> dict[str, Any]:
        with self._lock:
            record = self._pending_upload(upload_id)
            if len(set(part_ids)) != len(part_ids):
                raise bad_request("part_ids must not repeat a part.", param="part_ids")
            for part_id in part_ids:
                if part_id not in record.parts:
                    raise bad_request(
                        f"Part {part_id} does not belong to upload {upload_id}.", param="part_ids"
                    )
            content = b"".join(record.parts[part_id] for part_id in part_ids)
            if len(content) != record.size:
                raise bad_request(
                    f"The upload declared {record.size} bytes, but the parts hold "
                    f"{len(content)} bytes.",
                    param="part_ids",
                )
            if md5 and hashlib.md5(content).hexdigest() != md5.lower():
                raise bad_request(
                    "The md5 checksum does not match the uploaded bytes.", param="md5"
                )
            record.file = self._add_file(
                content, record.filename, record.purpose, record.file_expires_after
            )
            record.status = "completed"
            return self._upload_dict(record)

    def cancel_upload(self, upload_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._pending_upload(upload_id)
            record.status = "cancelled"
            return self._upload_dict(record)

    # --- jobs: creation --------------------------------------------------------------------

    def _base_model(self, model: str) -> str:
        """Snapshot a job trains from; raises unless ``model`` is fine-tunable here."""
        if model.startswith("ft:"):
            if model not in self._ft_models:
                raise bad_request(
                    f"Model {model} is not available for fine-tuning or does not exist.",
                    param="model",
                    code="model_not_available",
                )
            return model.split(":")[1]
        if model not in self.config.fine_tunable_models:
            raise bad_request(
                f"Model {model} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            )
        return MODEL_ALIASES.get(model, model)

    def _fine_tune_file(self, file_id: str, param: str) -> FileRecord:
        record = self._files.get(file_id)
        if record is None:
            raise bad_request(f"Invalid file ID: {file_id}. No such file.", param=param)
        if record.purpose != "fine-tune":
            raise bad_request(
                f"File {file_id} has purpose '{record.purpose}'; fine-tuning needs 'fine-tune'.",
                param=param,
                code="invalid_file_purpose",
            )
        return record

    def active_job_count(self) -> int:
        with self._lock:
            self._advance_all()
            return sum(1 for job in self._jobs.values() if not job.terminal)

    def create_job(self, request: JobRequest, organization: str) -> dict[str, Any]:
        """Validate against state, then commit the job; returns its object."""
        with self._lock:
            self._advance_all()
            config = self.config
            base_model = self._base_model(request.model)
            training = self._fine_tune_file(request.training_file, "training_file")
            validation = (
                self._fine_tune_file(request.validation_file, "validation_file")
                if request.validation_file
                else None
            )
            limit = config.max_active_jobs
            if limit is not None and self.active_job_count() >= limit:
                raise APIError(
                    429,
                    f"This fine-tune request has been rate-limited. Your organization has "
                    f"reached the maximum of {limit} concurrent fine-tuning jobs; wait for one "
                    "to finish.",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(int(config.retry_after_seconds))},
                )
            dataset, data_error = self._parse_files(request, base_model, training, validation)
            hyperparameters = (
                resolve_hyperparameters(
                    request.hyperparameters, request.method_type, len(dataset.examples)
                )
                if dataset
                else dict(request.hyperparameters)
            )
            job_id = new_id("ftjob-")
            seed = request.seed if request.seed is not None else random.randrange(2**31)
            ft_name = (
                f"ft:{base_model}:{_short_org(organization)}:{request.suffix or ''}:"
                f"{random_token(8)}"
            )
            fail_code = (request.metadata or {}).get("sandbox_fail") or None
            plan = plan_job(
                job_id=job_id,
                fine_tuned_model=ft_name,
                training_file=training.id,
                validation_file=validation.id if validation else None,
                dataset=dataset,
                data_error=data_error,
                hyperparameters=hyperparameters,
                seed=seed,
                fail_code=fail_code,
                config=config,
            )
            now = self.clock()
            job = JobRecord(
                id=job_id,
                created_at=now,
                request=request,
                model=request.model if request.model.startswith("ft:") else base_model,
                hyperparameters=hyperparameters,
                seed=seed,
                planned_model=ft_name,
                plan=plan,
                dataset=dataset,
                segment_start=now,
            )
            self._jobs[job_id] = job
            self._job_position[job_id] = len(self._job_order)
            self._job_order.append(job_id)
            for key, value in (request.metadata or {}).items():
                self._by_metadata.setdefault((key, value), []).append(job_id)
            self._jobs_created += 1
            ftq_job_id = (request.metadata or {}).get("ftq_job_id")
            if ftq_job_id is not None:
                self._creates_by_ftq_job_id[ftq_job_id] += 1
                self._first_create_at.setdefault(ftq_job_id, now)
            self._advance(job, now)
            self._schedule(job)
            return self._job_dict(job, now)

    def _parse_files(
        self,
        request: JobRequest,
        base_model: str,
        training: FileRecord,
        validation: FileRecord | None,
    ) -> tuple[Dataset | None, dict[str, Any] | None]:
        # Data problems do not fail the create call: like OpenAI, the job is created and
        # fails at the end of validating_files with the reason on job.error.
        checks = [(training, "Training file", "training_file", self.config.min_training_examples)]
        if validation:
            checks.append((validation, "Validation file", "validation_file", 1))
        dataset: Dataset | None = None
        for record, label, param, minimum in checks:
            try:
                parsed = parse_dataset(
                    record.content,
                    label=label,
                    method=request.method_type,
                    base_model=base_model,
                    min_examples=minimum,
                )
            except DataError as exc:
                return None, {"code": f"invalid_{param}", "message": str(exc), "param": param}
            dataset = dataset or parsed
        return dataset, None

    # --- jobs: progression -----------------------------------------------------------------

    def _effective(self, job: JobRecord, now: float) -> float:
        if job.paused:
            return job.progress_offset
        return job.progress_offset + max(0.0, now - job.segment_start)

    def _advance_all(self) -> None:
        """Apply every milestone that is due, touching only the jobs that have one."""
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            _, version, job_id = heapq.heappop(self._due)
            job = self._jobs.get(job_id)
            if job is None or version != job.schedule_version:
                continue  # the job's clock changed (pause, resume, cancel) since this entry
            self._advance(job, now)
            self._schedule(job)

    def _schedule(self, job: JobRecord) -> None:
        """(Re)compute when the job's next milestone falls due; call after any change to
        its clock (create, advance, pause, resume, cancel)."""
        job.schedule_version += 1
        milestones = job.plan.milestones
        if job.terminal or job.paused or job.next_milestone >= len(milestones):
            return
        wall = job.segment_start + (milestones[job.next_milestone].at - job.progress_offset)
        heapq.heappush(self._due, (wall, job.schedule_version, job.id))

    def _advance(self, job: JobRecord, now: float) -> None:
        elapsed = self._effective(job, now)
        milestones = job.plan.milestones
        while not job.terminal and job.next_milestone < len(milestones):
            milestone = milestones[job.next_milestone]
            if milestone.at > elapsed:
                break
            job.next_milestone += 1
            # Wall time of the milestone on the current segment of the effective clock.
            wall = job.segment_start + (milestone.at - job.progress_offset)
            self._apply(job, milestone, wall)

    def _add_event(
        self,
        job: JobRecord,
        at: float,
        message: str,
        level: str = "info",
        type_: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        job.events.append(EventRecord(new_id("ftevent-"), int(at), level, message, type_, data))

    def _apply(self, job: JobRecord, milestone: Milestone, wall: float) -> None:
        if milestone.event:
            spec = milestone.event
            self._add_event(job, wall, spec.message, spec.level, spec.type, spec.data)
        if milestone.status:
            job.phase_status = milestone.status
            job.status_changes.append((milestone.status, wall))
        if milestone.checkpoint_step is not None:
            name = f"{job.planned_model}:ckpt-step-{milestone.checkpoint_step}"
            job.checkpoints.append(
                CheckpointRecord(
                    id=new_id("ftckpt_"),
                    created_at=int(wall),
                    job_id=job.id,
                    model=name,
                    step=milestone.checkpoint_step,
                    metrics=dict(milestone.checkpoint_metrics or {}),
                )
            )
            self._inference[name] = job.id
        if milestone.error is not None:
            job.error = dict(milestone.error)
            job.status_override = job.phase_status = "failed"
            job.status_changes.append(("failed", wall))
            job.finished_at = int(wall)
        if milestone.succeed:
            self._succeed(job, wall)

    def _succeed(self, job: JobRecord, wall: float) -> None:
        result = self._add_file(
            results_csv(job.plan.metrics_rows), "step_metrics.csv", "fine-tune-results", None, wall
        )
        job.result_files = [result.id]
        job.fine_tuned_model = job.planned_model
        epochs = int(job.hyperparameters.get("n_epochs", 1))
        job.trained_tokens = (job.dataset.tokens if job.dataset else 0) * epochs
        job.status_override = "succeeded"
        job.finished_at = int(wall)
        owner = job.planned_model.split(":")[2]
        self._ft_models[job.planned_model] = ModelRecord(
            job.planned_model, int(wall), owner, job.id
        )
        self._inference[job.planned_model] = job.id

    def _status(self, job: JobRecord, now: float) -> str:
        if job.status_override:
            return job.status_override
        if job.paused:
            return "paused"
        if now < job.segment_start:
            return "queued"  # re-queued after a resume
        return job.phase_status

    def _job_dict(self, job: JobRecord, now: float) -> dict[str, Any]:
        status = self._status(job, now)
        estimated_finish = None
        if status in ("queued", "running"):
            remaining = job.plan.end_at - self._effective(job, now)
            estimated_finish = int(now + max(0.0, job.segment_start - now) + remaining)
        request = job.request
        method: dict[str, Any] = {
            "type": request.method_type,
            request.method_type: {"hyperparameters": job.hyperparameters, **request.method_extra},
        }
        return {
            "id": job.id,
            "object": "fine_tuning.job",
            "created_at": int(job.created_at),
            "error": job.error,
            "fine_tuned_model": job.fine_tuned_model,
            "finished_at": job.finished_at,
            "hyperparameters": job.hyperparameters,
            "model": job.model,
            "organization_id": "org-sandbox",
            "result_files": list(job.result_files),
            "seed": job.seed,
            "status": status,
            "trained_tokens": job.trained_tokens,
            "training_file": request.training_file,
            "validation_file": request.validation_file,
            "integrations": request.integrations,
            "estimated_finish": estimated_finish,
            "method": method,
            "metadata": request.metadata,
            "suffix": request.suffix,
        }

    # --- jobs: reads and control -----------------------------------------------------------

    def _job(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise not_found(
                f"Fine-tuning job {job_id} not found.",
                param="fine_tuning_job_id",
                code="fine_tune_not_found",
            )
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            return self._job_dict(self._job(job_id), self.clock())

    def list_jobs(
        self,
        *,
        after: str | None,
        limit: int,
        metadata: dict[str, str] | None,
        null_metadata: bool,
    ) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            self._advance_all()
            now = self.clock()

            if null_metadata:
                jobs = [job for job in reversed(self._jobs.values()) if not job.request.metadata]
            elif metadata:
                # The shortest index list among the wanted pairs, then the other pairs.
                candidates = min(
                    (self._by_metadata.get(pair, []) for pair in metadata.items()), key=len
                )
                jobs = [
                    job
                    for job in map(self._jobs.__getitem__, reversed(candidates))
                    if all((job.request.metadata or {}).get(k) == v for k, v in metadata.items())
                ]
            else:
                return self._unfiltered_page(after, limit, now)
            page, has_more = cursor_page(jobs, after=after, limit=limit, key=lambda j: j.id)
            return [self._job_dict(job, now) for job in page], has_more

    def _unfiltered_page(
        self, after: str | None, limit: int, now: float
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, sliced by position instead of scanning every job."""
        end = len(self._job_order)  # exclusive, counted from the oldest
        if after is not None:
            if after not in self._job_position:
                return [], False
            end = self._job_position[after]
        start = max(0, end - limit)
        page = [self._jobs[job_id] for job_id in reversed(self._job_order[start:end])]
        return [self._job_dict(job, now) for job in page], start > 0

    def list_events(
        self, job_id: str, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            self._advance_all()
            events = list(reversed(self._job(job_id).events))
            page, has_more = cursor_page(events, after=after, limit=limit, key=lambda e: e.id)
            return [event.to_dict() for event in page], has_more

    def list_checkpoints(
        self, job_id: str, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            self._advance_all()
            checkpoints = list(reversed(self._job(job_id).checkpoints))
            page, has_more = cursor_page(checkpoints, after=after, limit=limit, key=lambda c: c.id)
            return [checkpoint.to_dict() for checkpoint in page], has_more

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            job, now = self._job(job_id), self.clock()
            if job.status_override in ("succeeded", "failed"):
                raise bad_request(
                    f"Job {job_id} has already completed.", param="fine_tuning_job_id"
                )
            if job.status_override != "cancelled":
                job.status_override = "cancelled"
                job.finished_at = int(now)
                self._add_event(job, now, "Fine-tuning job cancelled")
                job.status_changes.append(("cancelled", now))
                self._schedule(job)
            return self._job_dict(job, now)

    def pause_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            job, now = self._job(job_id), self.clock()
            if job.terminal:
                raise bad_request(
                    f"Job {job_id} is {job.status_override} and cannot be paused.",
                    param="fine_tuning_job_id",
                )
            if not job.paused:
                job.progress_offset = self._effective(job, now)
                job.paused = True
                self._add_event(job, now, "Fine-tuning job paused")
                self._schedule(job)
            return self._job_dict(job, now)

    def resume_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            job, now = self._job(job_id), self.clock()
            if job.terminal:
                raise bad_request(
                    f"Job {job_id} is {job.status_override} and cannot be resumed.",
                    param="fine_tuning_job_id",
                )
            if job.paused:
                # A resumed running job waits in the queue again before training continues.
                requeue = self.config.scaled(self.config.queued_seconds)
                job.paused = False
                job.segment_start = now + (requeue if job.phase_status == "running" else 0.0)
                self._add_event(job, now, "Fine-tuning job resumed")
                self._schedule(job)
            return self._job_dict(job, now)

    # --- models and inference --------------------------------------------------------------

    def _base_models(self) -> list[str]:
        names = list(dict.fromkeys(self.config.fine_tunable_models))
        return names + [m for m in MODERATION_MODELS if m not in names]

    def list_models(self) -> list[dict[str, Any]]:
        with self._lock:
            self._advance_all()
            base = [
                {
                    "id": name,
                    "object": "model",
                    "created": _BASE_MODEL_CREATED,
                    "owned_by": "system",
                    "shutdown_date": shutdown_date(name),
                }
                for name in self._base_models()
            ]
            return base + [self._ft_model_dict(m) for m in self._ft_models.values()]

    def _ft_model_dict(self, record: ModelRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "object": "model",
            "created": record.created,
            "owned_by": record.owned_by,
            "shutdown_date": shutdown_date(record.id.split(":")[1]),
        }

    def _model_missing(self, model: str) -> APIError:
        return not_found(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

    def get_model(self, model: str) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            for item in self.list_models():
                if item["id"] == model:
                    return item
            raise self._model_missing(model)

    def delete_model(self, model: str) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            if model in self._ft_models:
                del self._ft_models[model]
                self._inference.pop(model, None)
                return {"id": model, "object": "model", "deleted": True}
            if model in self._base_models():
                raise APIError(
                    403,
                    "You have insufficient permissions for this operation: base models cannot "
                    "be deleted.",
                    code="insufficient_permissions",
                )
            raise self._model_missing(model)

    def inference_examples(self, model: str) -> tuple[Example, ...] | None:
        """Training examples behind ``model``; None for a base model; 404 if unknown."""
        with self._lock:
            self._advance_all()
            job_id = self._inference.get(model)
            if job_id is not None:
                dataset = self._jobs[job_id].dataset
                return dataset.examples if dataset else ()
            if model in self._base_models() or model in MODEL_ALIASES:
                return None
            raise self._model_missing(model)

    # --- observability ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            by_status = Counter(self._status(j, self.clock()) for j in self._jobs.values())
            return {
                "jobs_created": self._jobs_created,
                "creates_by_ftq_job_id": dict(self._creates_by_ftq_job_id),
                "jobs_by_status": dict(by_status),
                "files": len(self._files),
            }

    def timeline(self) -> dict[str, Any]:
        """Per ftq job: when its first create arrived and when its upstream status changed
        (wall times, unrounded), so a benchmark can measure how late ftq saw each change."""
        with self._lock:
            self._advance_all()
            out: dict[str, Any] = {}
            for job in self._jobs.values():
                ftq_job_id = (job.request.metadata or {}).get("ftq_job_id")
                if ftq_job_id is None or ftq_job_id in out:
                    continue
                out[ftq_job_id] = {
                    "upstream_id": job.id,
                    "created_at": self._first_create_at.get(ftq_job_id, job.created_at),
                    "status_changes": [list(change) for change in job.status_changes],
                }
            return out
