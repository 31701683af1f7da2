"""The entry point of one rank of a multi-process run (started by torchrun; see distributed.py).

``python -m service.providers.local.launch LAUNCH_FILE`` joins the process group (NCCL on GPU,
gloo on CPU), runs the same loop as a single process with its share of each batch, and reports:
rank 0 appends steps, evaluations and checkpoints as JSON lines to the events file; every
rank writes an exit marker (done, cancelled, or the error it raised). A rank that dies leaves
no marker, which is how the parent tells a killed process from a failed run.

``--exec-torchrun PARENT_PID CMD...`` is how the parent starts torchrun: it sets the parent
death signal, then execs ``CMD`` (so torchrun dies with the training worker).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from service.providers.local.contract import TrainingCallbacks, TrainingCancelled
from service.providers.local.distributed import RunFiles, set_parent_death_signal
from service.providers.local.spec import TrainingSpec


class RankCallbacks(TrainingCallbacks):
    """Rank 0 relays events to the parent; every rank reads the cancel flag and checks that
    the parent (the training worker) still lives."""

    def __init__(self, files: RunFiles, rank: int, parent_pid: int | None) -> None:
        # parent_pid is None on another host (a multi-node launch): nothing local to watch.
        self.files, self.rank, self.parent_pid = files, rank, parent_pid
        self._events = files.events.open("a", encoding="utf-8") if rank == 0 else None

    def _emit(self, payload: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.write(json.dumps(payload) + "\n")
            self._events.flush()

    def on_step(
        self, step: int, total_steps: int, train_loss: float, learning_rate: float, tokens: int
    ) -> None:
        self._emit(
            {
                "event": "step",
                "step": step,
                "total_steps": total_steps,
                "train_loss": train_loss,
                "learning_rate": learning_rate,
                "tokens": tokens,
            }
        )

    def on_eval(self, step: int, valid_loss: float) -> None:
        self._emit({"event": "eval", "step": step, "valid_loss": valid_loss})

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self._emit({"event": "checkpoint", "step": step, "path": str(path), "metrics": metrics})

    def should_cancel(self) -> bool:
        if self.files.cancel.exists():
            return True
        if self.parent_pid is not None and not _alive(self.parent_pid):
            raise SystemExit(f"rank {self.rank}: the training worker is gone")
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_marker(files: RunFiles, rank: int, payload: dict[str, Any]) -> None:
    target = files.exit_marker(rank)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, **payload}), encoding="utf-8")
    os.replace(tmp, target)


def main(launch_file: Path) -> int:
    import torch
    import torch.distributed as torch_dist

    from service.providers.local.models import resolve_device
    from service.providers.local.trainer import Ranks, run_loop

    set_parent_death_signal(signal.SIGKILL)  # torchrun's agent gone: so are we
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    launch = json.loads(launch_file.read_text(encoding="utf-8"))
    files = RunFiles(launch_file.parent)
    files.pid_file(rank).write_text(str(os.getpid()), encoding="utf-8")
    spec = TrainingSpec.model_validate(launch["spec"])
    cuda = resolve_device(spec.device).type == "cuda"
    torch_dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    ranks = Ranks(
        rank=rank,
        world=world,
        local_rank=local_rank,
        device=device,
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
    )
    same_host = launch.get("parent_host") == socket.gethostname()
    callbacks = RankCallbacks(files, rank, int(launch["parent_pid"]) if same_host else None)
    validation = launch.get("validation_file")
    try:
        run_loop(
            spec,
            Path(launch["training_file"]),
            Path(validation) if validation else None,
            callbacks,
            ranks,
        )
    except TrainingCancelled as cancelled:
        _write_marker(
            files, rank, {"status": "cancelled", "completed_steps": cancelled.completed_steps}
        )
        return 0
    except Exception as exc:
        _write_marker(
            files, rank, {"status": "error", "type": type(exc).__name__, "message": str(exc)}
        )
        raise
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    _write_marker(files, rank, {"status": "done"})
    return 0


def exec_torchrun(parent_pid: int, command: list[str]) -> None:
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        raise SystemExit("the training worker is gone")
    os.execv(command[0], command)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--exec-torchrun":
        exec_torchrun(int(sys.argv[2]), sys.argv[3:])
    sys.exit(main(Path(sys.argv[1])))
