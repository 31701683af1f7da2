"""Resumable training checkpoints, written atomically.

A checkpoint is a directory ``step-00000042`` holding the trainable weights (all weights for
``full``; the unfrozen ones or the adapter otherwise, since the rest equals the base model),
the optimizer, scheduler and RNG states, and ``trainer_state.json``. It is written into a
``.tmp-`` directory and renamed into place, so a worker killed mid-write leaves only a temp
directory that resuming ignores (and removes).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint

_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"


class CheckpointMismatch(RuntimeError):
    """A checkpoint in the output directory belongs to a different run configuration."""


@dataclass
class TrainerState:
    step: int = 0
    total_steps: int = 0
    tokens: int = 0
    first_train_loss: float | None = None
    last_train_loss: float | None = None
    last_valid_loss: float | None = None
    # Identifies the run configuration; resuming a different one would be silently wrong.
    fingerprint: dict[str, Any] = field(default_factory=dict)


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for entry in checkpoints_dir.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(checkpoints_dir)
    return checkpoints[-1][1] if checkpoints else None


def remove_partial_checkpoints(checkpoints_dir: Path) -> None:
    if not checkpoints_dir.is_dir():
        return
    for entry in checkpoints_dir.iterdir():
        partial = entry.name.startswith(_TMP_PREFIX) or (
            _STEP_DIR.match(entry.name) and not (entry / STATE_FILE).is_file()
        )
        if partial:
            shutil.rmtree(entry, ignore_errors=True)


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    for _, path in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def trainable_state(model: Any) -> dict[str, Any]:
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def save_checkpoint(
    checkpoints_dir: Path,
    weights: dict[str, Any],
    optimizer_state: dict[str, Any],
    scheduler: Any,
    state: TrainerState,
) -> Path:
    """Write one checkpoint: ``weights`` the trainable tensors by parameter name,
    ``optimizer_state`` as ``optimizer.state_dict()`` of one process (``sharding`` gathers
    both whatever the strategy)."""
    import torch
    from safetensors.torch import save_file

    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / step_dir_name(state.step)
    tmp = checkpoints_dir / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(weights, str(tmp / WEIGHTS_FILE))
    torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
    torch.save(_rng_state(), tmp / RNG_FILE)
    _write_json(tmp / STATE_FILE, asdict(state))
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(checkpoints_dir)
    return final


@dataclass
class SavedCheckpoint:
    """A checkpoint read back whole, on CPU, for any placement to load."""

    state: TrainerState
    weights: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]


def read_checkpoint(path: Path, model: Any, fingerprint: dict[str, Any]) -> SavedCheckpoint:
    """Read ``path`` after checking it belongs to this run and this model's trainable set."""
    import torch
    from safetensors.torch import load_file

    state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
    if state.fingerprint != fingerprint:
        raise CheckpointMismatch(
            f"{path} was written by a different run configuration "
            f"({state.fingerprint} != {fingerprint}); clear the output directory to restart"
        )
    weights = load_file(str(path / WEIGHTS_FILE))
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise CheckpointMismatch(f"{path}: trainable parameters differ from the model's")
    return SavedCheckpoint(
        state=state,
        weights=weights,
        optimizer=torch.load(path / OPTIMIZER_FILE, map_location="cpu"),
        scheduler=torch.load(path / SCHEDULER_FILE),
        rng=torch.load(path / RNG_FILE),
    )


def _rng_state() -> dict[str, Any]:
    import torch

    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(saved: dict[str, Any]) -> None:
    import torch

    random.setstate(saved["python"])
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")


def _fsync_tree(directory: Path) -> None:
    """Flush file contents before the rename publishes them, so a crashed host cannot leave a
    renamed-but-empty checkpoint."""
    for entry in directory.iterdir():
        with entry.open("rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
