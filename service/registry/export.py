"""Take your model with you: a local fine-tune's weights as a result file.

The rule: when a local job succeeds, its ``final/`` directory — the PEFT adapter
(``adapter_model.safetensors`` + ``adapter_config.json``) for LoRA, the full model for
``full``/``freeze`` — plus its tokenizer and ftq's ``ftq_model.json`` is written as one
uncompressed tar (safetensors do not compress) into the team's files, purpose
``fine-tune-results``, hashed while it is written. ``GET /v1/files/{id}/content`` streams
it and the file object carries its ``sha256``. Packing happens outside the transaction
(``stage``), recording inside it (``record``), so a slow disk never holds the job's row
lock. Beside it goes OpenAI's ``step_metrics.csv``, built from the job's metrics events.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, col, select

from service import ids
from service.files.models import File
from service.files.service import FINE_TUNE_RESULTS, store_result_file
from service.files.storage import StagedUpload, get_storage
from service.jobs.models import FineTuningJob, JobEvent

# Weights, not uploads: the upload limit does not apply (a full 7B model is ~15 GB).
_NO_LIMIT = 1 << 62
# Bookkeeping the trainer writes that a user has no use for.
_LEFT_OUT = frozenset({"result.json"})


@dataclass(frozen=True)
class StagedWeights:
    staged: StagedUpload
    filename: str
    kind: str  # "adapter" or "model"


def _kind(final: Path) -> str:
    try:
        info = json.loads((final / "ftq_model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if info.get("kind") in ("adapter", "model"):
        return str(info["kind"])
    return "adapter" if (final / "adapter_config.json").is_file() else "model"


def stage(job_id: str, final: Path) -> StagedWeights:
    """Write ``final/`` as ``<job>-adapter.tar`` or ``<job>-model.tar`` into staging."""
    kind = _kind(final)
    staged = StagedUpload(get_storage().root, _NO_LIMIT)
    try:
        with tarfile.open(fileobj=staged, mode="w|") as archive:  # type: ignore[call-overload]
            for path in sorted(final.rglob("*")):
                if path.is_file() and path.name not in _LEFT_OUT:
                    archive.add(path, arcname=f"{job_id}/{path.relative_to(final)}")
        staged.close()
    except BaseException:
        staged.discard()
        raise
    return StagedWeights(staged, f"{job_id}-{kind}.tar", kind)


def record(session: Session, job: FineTuningJob, weights: StagedWeights) -> File:
    """Store the staged tar as the team's result file (deleted again if the caller's
    transaction rolls back)."""
    storage = get_storage()
    file_id = ids.file_id()
    key = f"{job.team_id}/{file_id}.result"
    storage.commit(weights.staged, key)
    row = File(
        id=file_id,
        team_id=job.team_id,
        filename=weights.filename,
        purpose=FINE_TUNE_RESULTS,
        bytes=weights.staged.size,
        sha256=weights.staged.sha256,
        storage_key=key,
        validation_status="skipped",
    )
    session.add(row)
    session.info.setdefault("on_rollback", []).append(lambda: storage.delete(key))
    return row


METRIC_COLUMNS = ("step", "train_loss", "valid_loss", "learning_rate", "tokens")


def step_metrics_csv(session: Session, job: FineTuningJob) -> File:
    """OpenAI's ``step_metrics.csv`` result file, from the job's metrics events: one row per
    step (training and validation loss side by side), so scripts reading OpenAI's result
    files read a local job's too."""
    rows: dict[int, dict[str, object]] = {}
    events = session.exec(
        select(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.type == "metrics")
        .order_by(col(JobEvent.pk))
    )
    for event in events:
        data = event.data or {}
        if isinstance(data.get("step"), int):
            row = rows.setdefault(data["step"], {"step": data["step"]})
            row.update({k: data[k] for k in METRIC_COLUMNS if k in data})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for step in sorted(rows):
        writer.writerow(rows[step])
    return store_result_file(session, job.team_id, "step_metrics.csv", buffer.getvalue().encode())
