"""Calling a local job's checkpoints like any provider's: ``…:ckpt-step-N`` answers.

The rule: a checkpoint keeps only its trainable weights (``trainable.safetensors``: the
adapter, the unfrozen layers, or everything for ``full``). On its first call the inference
server materialises it once into ``served/`` beside them — the base model with the job's
method applied and those weights loaded, saved exactly as a final model is (PEFT adapter or
full model, tokenizer, ``ftq_model.json``) — written to a temporary directory and renamed,
so two servers racing write it twice at worst, never half.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

from sqlmodel import Session, select

from service.config import get_settings
from service.jobs.models import FineTuningJob, JobCheckpoint
from service.jobs.runners.local import LOCAL, saved_checkpoint_dir
from service.providers.local.checkpoints import WEIGHTS_FILE
from service.providers.local.models import MODEL_INFO_FILE

SERVED = "served"
_lock = threading.Lock()


def checkpoint_model_dir(session: Session, model: str) -> Path | None:
    """The directory serving the local checkpoint ``model``, materialised if needed; None
    when ``model`` is no local checkpoint (or its weights are gone)."""
    row = session.exec(
        select(JobCheckpoint, FineTuningJob)
        .join(FineTuningJob, JobCheckpoint.job_id == FineTuningJob.id)  # type: ignore[arg-type]
        .where(JobCheckpoint.fine_tuned_model_checkpoint == model, FineTuningJob.provider == LOCAL)
    ).first()
    if row is None:
        return None
    checkpoint, job = row
    source = saved_checkpoint_dir(job.id, checkpoint.step_number)
    if not (source / WEIGHTS_FILE).is_file():
        return None
    target = source / SERVED
    if (target / MODEL_INFO_FILE).is_file():
        return target
    with _lock:
        if not (target / MODEL_INFO_FILE).is_file():
            _materialise(job, source, target)
    return target


def _materialise(job: FineTuningJob, source: Path, target: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from service.providers.local.methods import apply_method
    from service.providers.local.models import load_causal_lm, load_tokenizer, resolve_base_model
    from service.providers.local.spec import method_from_job, trains_adapter

    base_path = resolve_base_model(job.model, get_settings().local)
    method, _ = method_from_job(job.method, job.hyperparameters)
    model = apply_method(load_causal_lm(base_path), method)
    weights = load_file(str(source / WEIGHTS_FILE))
    parameters = dict(model.named_parameters())
    unknown = set(weights) - set(parameters)
    if unknown:
        raise RuntimeError(f"checkpoint weights do not fit the job's method: {sorted(unknown)[:3]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
    tmp = target.with_name(f".tmp-{SERVED}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    adapter = trains_adapter(method)
    if adapter:
        model.save_pretrained(tmp, save_embedding_layers=False)
    else:
        model.save_pretrained(tmp)
    load_tokenizer(base_path).save_pretrained(tmp)
    info = {
        "format": "ftq-local-v1",
        "kind": "adapter" if adapter else "model",
        "base_model_path": str(base_path.resolve()),
        "method": method.model_dump(mode="json"),
        "checkpoint_of": job.id,
    }
    (tmp / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
