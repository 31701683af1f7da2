"""FSDP (FSDP2 over gloo on CPU, two torchrun ranks) on the tiny model.

Tolerance: the sharded run's loss curve equals the single-process one to 1e-4 absolute at
every step (measured: below 1e-6; only the order of float sums in the reduce-scatter
differs), and so do the final weights (to 1e-4; measured below 2e-5 after 20 steps).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.unit.local_training.conftest import (
    LOSS_TOLERANCE,
    RecordingCallbacks,
    assert_same_curve,
    make_spec,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

WEIGHT_TOLERANCE = 1e-4
# 16 examples, batch 4: 4 steps an epoch.
SHORT_EPOCHS = 5
FSDP = {"processes": 2, "strategy": "fsdp"}


def _spec(base: Path, out: Path, method: dict, *, epochs: int = SHORT_EPOCHS, **overrides):
    spec = make_spec(base, out, method, **overrides)
    hyper = spec.hyperparameters.model_copy(update={"n_epochs": epochs})
    return spec.model_copy(update={"hyperparameters": hyper})


def _max_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    left, right = load_file(str(a)), load_file(str(b))
    assert set(left) == set(right)
    assert all(left[k].shape == right[k].shape for k in left)  # whole tensors, not shards
    return max(float((left[k] - right[k]).abs().max()) for k in left)


def test_auto_shards_only_what_does_not_fit_one_device():
    from service.providers.local.sharding import choose_strategy, estimate_bytes

    gib = 2**30
    one_b = 1_000_000_000
    # Full fine-tuning of 1B parameters: 4 + 16 bytes each replicated = 20 GB.
    assert estimate_bytes(one_b, one_b, 4, "ddp") == 20 * one_b
    assert estimate_bytes(one_b, one_b, 4, "fsdp") == 4 * one_b  # (4 + 12) / 4 ranks
    assert choose_strategy("auto", one_b, one_b, 80 * gib, 4) == "ddp"
    assert choose_strategy("auto", one_b, one_b, 24 * gib, 4) == "fsdp"
    # LoRA on the same base trains ~1% of it: 4 GB of frozen weights fit a 24 GiB device.
    assert choose_strategy("auto", one_b // 100, one_b, 24 * gib, 4) == "ddp"
    # An explicit choice stands, fitting or not.
    assert choose_strategy("fsdp", 10, 10, 80 * gib, 2) == "fsdp"
    assert choose_strategy("ddp", one_b, one_b, gib, 2) == "ddp"


@pytest.fixture(scope="module")
def single_full(tiny_base, data_files, tmp_path_factory):
    from service.providers.local.trainer import train

    callbacks = RecordingCallbacks()
    spec = _spec(
        tiny_base, tmp_path_factory.mktemp("one"), {"type": "full"}, checkpoint_every_steps=8
    )
    return train(spec, data_files[0], data_files[1], callbacks), callbacks


def test_fsdp_follows_the_single_process_loss_curve(tiny_base, data_files, tmp_path, single_full):
    """Full fine-tuning sharded over two ranks: the same losses, evaluations, checkpoints and
    final model as one process."""
    from service.providers.local.trainer import train

    reference, expected = single_full
    callbacks = RecordingCallbacks()
    spec = _spec(tiny_base, tmp_path, {"type": "full"}, checkpoint_every_steps=8, **FSDP)
    result = train(spec, data_files[0], data_files[1], callbacks)

    assert result.strategy == "fsdp" and reference.strategy == "single"
    assert_same_curve(callbacks, expected, steps=20, checkpoints=[8, 16])
    # Checkpoints gathered to rank 0 in the single-process format: same files, same tensors.
    for (_, path, _), (_, want_path, _) in zip(
        callbacks.checkpoints, expected.checkpoints, strict=True
    ):
        assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in want_path.iterdir())
    # The result is an ordinary model, equal to the single process's.
    final = result.final_dir / "model.safetensors"
    assert _max_difference(final, reference.final_dir / "model.safetensors") < WEIGHT_TOLERANCE
    info = json.loads((result.final_dir / "ftq_model.json").read_text())
    assert (info["processes"], info["strategy"], info["kind"]) == (2, "fsdp", "model")


def test_checkpoints_move_between_strategies_and_a_killed_rank_is_survived(
    tiny_base, data_files, tmp_path
):
    """LoRA, 48 steps, a checkpoint every 4: one process writes the first checkpoints and is
    cancelled; FSDP resumes from them (re-sharding the whole dicts), checkpoints, and loses
    rank 1 to SIGKILL; FSDP resumes again and finishes. The spliced loss curve equals an
    uninterrupted single-process run's and so does the adapter."""
    from service.providers.local.distributed import RunFiles
    from service.providers.local.trainer import (
        TrainingCancelled,
        TrainingProcessFailed,
        train,
    )

    method = {"type": "lora", "rank": 8, "alpha": 16}
    epochs = 12
    straight = RecordingCallbacks()
    reference = train(
        _spec(tiny_base, tmp_path / "straight", method, epochs=epochs),
        data_files[0],
        None,
        straight,
    )

    out = tmp_path / "moved"
    one = RecordingCallbacks(cancel_after=10)
    with pytest.raises(TrainingCancelled):
        train(
            _spec(tiny_base, out, method, epochs=epochs, checkpoint_every_steps=4),
            data_files[0],
            None,
            one,
        )
    assert [c[0] for c in one.checkpoints] == [4, 8]

    spec = _spec(tiny_base, out, method, epochs=epochs, checkpoint_every_steps=4, **FSDP)
    files = RunFiles(spec.output_dir / "run")
    killed: list[int] = []

    class KillRankOne(RecordingCallbacks):
        def on_checkpoint(self, step, path, metrics) -> None:
            super().on_checkpoint(step, path, metrics)
            if not killed:
                killed.append(int(files.pid_file(1).read_text()))
                os.kill(killed[0], signal.SIGKILL)

    sharded = KillRankOne()
    with pytest.raises(TrainingProcessFailed) as failed:
        train(spec, data_files[0], None, sharded)
    assert str(killed[0]) in str(failed.value)
    assert sharded.steps[0][0] == 9  # resumed the single process's step-8 checkpoint
    assert not (spec.output_dir / "final").exists()

    last = RecordingCallbacks()
    result = train(spec, data_files[0], None, last)
    newest = max(step for step, _, _ in sharded.checkpoints)
    assert result.resumed_from_step == newest and result.strategy == "fsdp"
    assert last.steps[0][0] == newest + 1 and last.steps[-1][0] == 48

    spliced = {s: loss for s, _, loss, _, _ in one.steps if s <= 8}
    spliced.update({s: loss for s, _, loss, _, _ in sharded.steps if s <= newest})
    spliced.update({s: loss for s, _, loss, _, _ in last.steps})
    expected = {s: loss for s, _, loss, _, _ in straight.steps}
    assert sorted(spliced) == sorted(expected) == list(range(1, 49))
    assert all(abs(spliced[s] - expected[s]) < LOSS_TOLERANCE for s in expected), [
        (s, spliced[s], expected[s])
        for s in expected
        if abs(spliced[s] - expected[s]) >= LOSS_TOLERANCE
    ]
    adapter = "adapter_model.safetensors"
    assert (result.final_dir / "adapter_config.json").is_file()
    assert not (result.final_dir / "model.safetensors").exists()
    assert (
        _max_difference(result.final_dir / adapter, reference.final_dir / adapter)
        < WEIGHT_TOLERANCE
    )
