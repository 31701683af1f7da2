"""What a training run and its caller exchange: callbacks, the result, the ways a run ends.

The rule: these types are the whole contract between the job runner and the trainer, however
many processes train. A run on several processes reports through the same callbacks, from the
parent process, in step order. Nothing here imports torch (the API imports the runner).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class TrainingCancelled(Exception):
    """``callbacks.should_cancel()`` returned True; raised before the next step runs."""

    def __init__(self, completed_steps: int) -> None:
        self.completed_steps = completed_steps
        super().__init__(f"training cancelled after {completed_steps} steps")


class TrainingProcessFailed(RuntimeError):
    """A process of a multi-process run died (killed, out of memory, a lost peer). Nothing is
    wrong with the job itself: run it again and it resumes from its newest checkpoint."""

    def __init__(self, message: str, completed_steps: int) -> None:
        self.completed_steps = completed_steps
        super().__init__(message)


class TrainingCallbacks:
    """Receives training events. Subclass and override what you need; all default to no-ops.

    Steps are 1-based counts of completed optimizer steps. Callbacks run on the training
    thread between steps, so they should be quick (queue an event, copy a checkpoint).
    """

    def on_step(
        self, step: int, total_steps: int, train_loss: float, learning_rate: float, tokens: int
    ) -> None:
        """Every ``log_every_steps`` and at the last step. ``train_loss`` is the mean batch
        loss since the previous report; ``tokens`` the cumulative tokens processed."""

    def on_eval(self, step: int, valid_loss: float) -> None:
        """Every ``eval_every_steps`` and at the last step, when there is a validation file."""

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """A complete checkpoint now exists at ``path``. Copy it now if you want to keep it:
        older local checkpoints are pruned."""

    def should_cancel(self) -> bool:
        """Polled before every step."""
        return False


@dataclass(frozen=True)
class TrainingResult:
    trained_tokens: int
    steps: int
    final_train_loss: float
    final_valid_loss: float | None
    final_dir: Path
    first_train_loss: float
    resumed_from_step: int | None = None
    # How the ranks held the model: "single" (one process), "ddp" or "fsdp".
    strategy: str = "single"

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["final_dir"] = str(self.final_dir)
        return payload
