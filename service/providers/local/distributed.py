"""Running one job on several processes: torchrun launches the ranks, this process follows.

The rule: the caller sees exactly the single-process contract. ``run`` starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m
service.providers.local.launch <launch file>`` (DDP over gloo on CPU, NCCL on GPU), tails the
JSON lines rank 0 appends to an events file and calls the callbacks from this process, in step
order. Cancel goes the other way through a flag file every rank reads before every step (the
ranks agree on it in the step's first collective, so all stop at the same step). After a
checkpoint event this process calls ``on_checkpoint`` and only then prunes old checkpoints, so
a checkpoint is never removed before the caller copied it.

How a run ends, as the caller sees it: the result (``final/`` written by rank 0);
TrainingCancelled; the same DatasetError / MethodError / CheckpointMismatch a single process
would raise; or TrainingProcessFailed when a rank died without reporting (SIGKILL, OOM killer,
a lost host) — the job is fine, and the next attempt resumes from the newest checkpoint.

Each attempt gets a fresh ``run/`` folder. torchrun dies with this process (PR_SET_PDEATHSIG),
each rank with torchrun, and each rank also stops when this process is gone, so a killed
worker never leaves ranks training behind the next attempt's back.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from service.providers.local import checkpoints as ckpt
from service.providers.local.contract import (
    TrainingCallbacks,
    TrainingCancelled,
    TrainingProcessFailed,
    TrainingResult,
)
from service.providers.local.spec import TrainingSpec

log = structlog.get_logger(__name__)

RUN_DIR = "run"
LAUNCH_FILE = "launch.json"
# How often the cancel flag is re-read while no step event arrives (a step may be long).
CANCEL_POLL_SECONDS = 1.0
TAIL_INTERVAL_SECONDS = 0.02
TERMINATE_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunFiles:
    """Where one attempt's ranks and their parent meet (all under ``output_dir/run``)."""

    root: Path

    @property
    def launch(self) -> Path:
        return self.root / LAUNCH_FILE

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def cancel(self) -> Path:
        return self.root / "cancel"

    @property
    def log(self) -> Path:
        return self.root / "torchrun.log"

    def exit_marker(self, rank: int) -> Path:
        return self.root / f"rank-{rank}.exit.json"

    def pid_file(self, rank: int) -> Path:
        return self.root / f"rank-{rank}.pid"


def run(
    spec: TrainingSpec,
    training_file: Path,
    validation_file: Path | None,
    callbacks: TrainingCallbacks,
) -> TrainingResult:
    files = RunFiles(spec.output_dir / RUN_DIR)
    shutil.rmtree(files.root, ignore_errors=True)
    files.root.mkdir(parents=True)
    files.events.touch()
    files.launch.write_text(
        json.dumps(
            {
                "spec": spec.model_dump(mode="json"),
                "training_file": str(training_file),
                "validation_file": str(validation_file) if validation_file else None,
                "parent_pid": os.getpid(),
                "parent_host": socket.gethostname(),
                "attempt": uuid.uuid4().hex,
            }
        ),
        encoding="utf-8",
    )
    with files.log.open("wb") as output:
        process = subprocess.Popen(
            launch_command(spec.processes, files.launch),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one group to stop: torchrun and every rank
            env={**os.environ, "OMP_NUM_THREADS": str(spec.torch_threads)},
        )
    log.info("local_training_launched", processes=spec.processes, pid=process.pid)
    try:
        last_step = _follow(process, files, spec, callbacks)
    except BaseException:
        _stop(process)
        raise
    return _outcome(process.returncode, files, spec, last_step)


def launch_command(processes: int, launch_file: Path) -> list[str]:
    """torchrun, started through launch.py's ``--exec`` which first arranges for it to die
    with this process (a preexec_fn would not be safe next to the caller's threads)."""
    return [
        sys.executable,
        "-m",
        "service.providers.local.launch",
        "--exec-torchrun",
        str(os.getpid()),
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "--max_restarts=0",
        "-m",
        "service.providers.local.launch",
        str(launch_file),
    ]


def _follow(
    process: subprocess.Popen[bytes],
    files: RunFiles,
    spec: TrainingSpec,
    callbacks: TrainingCallbacks,
) -> int:
    """Relay events until the launch exits; returns the last completed step seen."""
    last_step = 0
    last_poll = 0.0
    cancel_sent = False
    with files.events.open(encoding="utf-8") as events:
        buffer = ""
        while True:
            exited = process.poll() is not None
            chunk = events.read()
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            now = time.monotonic()
            # Poll cancel when steps arrive (like one process, every step) and before relaying
            # them: each relay is a write, and the ranks keep stepping meanwhile. Without new
            # steps, poll every CANCEL_POLL_SECONDS (a step may be long).
            parsed = [json.loads(line) for line in lines if line.strip()]
            stepped = any(event.get("event") == "step" for event in parsed)
            if not cancel_sent and (stepped or now - last_poll >= CANCEL_POLL_SECONDS):
                last_poll = now
                if callbacks.should_cancel():
                    files.cancel.touch()
                    cancel_sent = True
            for event in parsed:
                last_step = _relay(event, spec, callbacks, last_step)
            if exited and not chunk:
                return last_step
            if not chunk:
                time.sleep(TAIL_INTERVAL_SECONDS)


def _relay(
    event: dict[str, Any], spec: TrainingSpec, callbacks: TrainingCallbacks, last: int
) -> int:
    kind = event.get("event")
    if kind == "step":
        callbacks.on_step(
            event["step"],
            event["total_steps"],
            event["train_loss"],
            event["learning_rate"],
            event["tokens"],
        )
        return int(event["step"])
    if kind == "eval":
        callbacks.on_eval(event["step"], event["valid_loss"])
    elif kind == "checkpoint":
        path = Path(event["path"])
        callbacks.on_checkpoint(event["step"], path, event["metrics"])
        ckpt.prune_checkpoints(path.parent, spec.keep_checkpoints)
    return last


def _outcome(
    returncode: int, files: RunFiles, spec: TrainingSpec, last_step: int
) -> TrainingResult:
    from service.providers.local.trainer import RESULT_FILE, _read_result

    exits = {rank: _read_marker(files.exit_marker(rank)) for rank in range(spec.processes)}
    cancelled = [e for e in exits.values() if e and e.get("status") == "cancelled"]
    if cancelled:
        raise TrainingCancelled(int(cancelled[0]["completed_steps"]))
    final = spec.output_dir / "final"
    if returncode == 0 and (final / RESULT_FILE).is_file():
        return _read_result(final)
    failed = sorted((rank, e) for rank, e in exits.items() if e and e.get("status") == "error")
    job_errors = [e for _, e in failed if e.get("type") in _JOB_ERRORS]
    if job_errors:  # the job's own fault, whatever happened to the other ranks afterwards
        raise _as_exception(job_errors[0])
    missing = [rank for rank, marker in exits.items() if marker is None]
    if missing:
        raise TrainingProcessFailed(
            f"training processes ended without reporting (rank {', '.join(map(str, missing))}; "
            f"one died after step {last_step}, torchrun stopped the rest; exit "
            f"{returncode}): {_log_tail(files.log)}",
            completed_steps=last_step,
        )
    if failed:
        raise _as_exception(failed[0][1])
    raise TrainingProcessFailed(
        f"torchrun exited with {returncode} and no result: {_log_tail(files.log)}",
        completed_steps=last_step,
    )


_JOB_ERRORS = frozenset(
    {"DatasetError", "MethodError", "CheckpointMismatch", "FloatingPointError", "ValueError"}
)


def _as_exception(marker: dict[str, Any]) -> Exception:
    """The exception a single process would have raised, rebuilt from a rank's report."""
    from service.providers.local.checkpoints import CheckpointMismatch
    from service.providers.local.data import DatasetError
    from service.providers.local.methods import MethodError

    known: dict[str, type[Exception]] = {
        "DatasetError": DatasetError,
        "MethodError": MethodError,
        "CheckpointMismatch": CheckpointMismatch,
        "FloatingPointError": FloatingPointError,
        "ValueError": ValueError,
    }
    kind = known.get(marker.get("type", ""))
    message = str(marker.get("message", ""))
    if kind is not None:
        return kind(message)
    return RuntimeError(f"rank {marker.get('rank')}: {marker.get('type')}: {message}")


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _log_tail(path: Path, limit: int = 1500) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End torchrun and every rank (its session's whole process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def set_parent_death_signal(sig: int) -> None:
    """The kernel sends ``sig`` to this process when its parent dies (Linux; kept across
    exec)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
