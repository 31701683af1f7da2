"""Cancel, checkpoint cadence, kill-and-resume and re-delivery of a finished job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
from service.providers.local.checkpoints import CheckpointMismatch
from service.providers.local.spec import Hyperparameters
from service.providers.local.trainer import TrainingCancelled, train

from .conftest import TOTAL_STEPS, RecordingCallbacks, make_spec

# peft 0.21 still reads a property transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
REPO_ROOT = Path(__file__).resolve().parents[3]


def short_spec(base: Path, output_dir: Path, **overrides):
    # 16 examples, batch 8: 2 steps per epoch, 6 steps in all; a checkpoint at each epoch end.
    options = {
        "hyperparameters": Hyperparameters(n_epochs=3, batch_size=8),
        "checkpoint_every_steps": 1000,
        "checkpoint_each_epoch": True,
        "keep_checkpoints": 1,
    }
    options.update(overrides)
    return make_spec(base, output_dir, {"type": "full"}, **options)


def test_cancel_stops_within_one_step(tiny_base, data_files, tmp_path):
    spec = short_spec(tiny_base, tmp_path / "run")
    callbacks = RecordingCallbacks(cancel_after=5)
    with pytest.raises(TrainingCancelled) as exc_info:
        train(spec, data_files[0], None, callbacks)
    assert exc_info.value.completed_steps == 5
    assert [s[0] for s in callbacks.steps] == [1, 2, 3, 4, 5]
    assert [c[0] for c in callbacks.checkpoints] == [2, 4]  # epoch ends
    remaining = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert remaining == ["step-00000004"]  # keep_checkpoints=1
    assert not (tmp_path / "run" / "final").exists()

    # A different configuration must not silently continue someone else's checkpoint.
    with pytest.raises(CheckpointMismatch):
        train(short_spec(tiny_base, tmp_path / "run", seed=1), data_files[0], None, callbacks)

    # The same one picks up after the last checkpoint and finishes.
    resumed = RecordingCallbacks()
    result = train(spec, data_files[0], None, resumed)
    assert result.resumed_from_step == 4
    assert [s[0] for s in resumed.steps] == [5, 6]
    assert (result.final_dir / "result.json").is_file()


def test_cancel_before_the_first_step(tiny_base, data_files, tmp_path):
    callbacks = RecordingCallbacks(cancel_after=0)
    with pytest.raises(TrainingCancelled) as exc_info:
        train(short_spec(tiny_base, tmp_path / "run"), data_files[0], None, callbacks)
    assert exc_info.value.completed_steps == 0
    assert callbacks.steps == [] and callbacks.cancel_polls == 1


def test_finished_run_is_returned_not_retrained(trained_runs, data_files):
    run = trained_runs("freeze")
    callbacks = RecordingCallbacks()
    again = train(run.spec, data_files[0], data_files[1], callbacks)
    assert again == run.result
    assert callbacks.steps == [] and callbacks.checkpoints == []


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    from tests.unit.local_training.conftest import make_spec
    from service.providers.local.trainer import TrainingCallbacks, train

    args = json.loads(sys.argv[1])

    class Callbacks(TrainingCallbacks):
        slow = False

        def on_step(self, step, total_steps, train_loss, learning_rate, tokens):
            print("STEP", step, flush=True)
            if self.slow:  # stay mid-run until the parent's SIGKILL lands
                time.sleep(0.2)

        def on_checkpoint(self, step, path, metrics):
            print("CHECKPOINT", step, flush=True)
            self.slow = True

    spec = make_spec(
        Path(args["base"]), Path(args["out"]), {"type": "full"}, checkpoint_every_steps=40
    )
    train(spec, Path(args["train"]), None, Callbacks())
    print("FINISHED", flush=True)
    """
)


def test_killed_worker_resumes_from_its_last_checkpoint(
    tiny_base, data_files, tmp_path, trained_runs
):
    out = tmp_path / "run"
    args = {"base": str(tiny_base), "out": str(out), "train": str(data_files[0])}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child_steps: list[int] = []
    checkpoint_step = None
    try:
        assert child.stdout is not None
        for line in child.stdout:
            kind, _, value = line.strip().partition(" ")
            if kind == "STEP":
                child_steps.append(int(value))
            elif kind == "CHECKPOINT":
                checkpoint_step = int(value)
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=60)
    assert checkpoint_step == 40, stderr
    assert child.returncode == -signal.SIGKILL

    # Leftovers of a kill during a checkpoint write: neither may be mistaken for a checkpoint.
    checkpoints = out / "checkpoints"
    (checkpoints / ".tmp-step-00000050-12345").mkdir()
    (checkpoints / ".tmp-step-00000050-12345" / "trainable.safetensors").write_bytes(b"junk")
    (checkpoints / "step-00000060").mkdir()
    (checkpoints / "step-00000060" / "trainable.safetensors").write_bytes(b"junk")

    callbacks = RecordingCallbacks()
    result = train(make_spec(tiny_base, out, {"type": "full"}), data_files[0], None, callbacks)
    resumed_steps = [s[0] for s in callbacks.steps]
    assert result.resumed_from_step == 40
    assert resumed_steps[0] == 41 and resumed_steps[-1] == TOTAL_STEPS
    # Steps the child ran after its checkpoint are lost and redone; nothing else is repeated.
    assert child_steps[:checkpoint_step] == list(range(1, checkpoint_step + 1))
    assert checkpoint_step + len(resumed_steps) == TOTAL_STEPS
    assert not (checkpoints / ".tmp-step-00000050-12345").exists()
    assert not (checkpoints / "step-00000060").exists()

    # The resumed run continues the same trajectory as an uninterrupted one.
    uninterrupted = trained_runs("full").result
    assert result.final_train_loss == pytest.approx(uninterrupted.final_train_loss, rel=1e-4)
    assert result.trained_tokens == uninterrupted.trained_tokens
    assert result.final_train_loss < 0.3 * uninterrupted.first_train_loss
