"""Several processes per job (torchrun, DDP over gloo on CPU) and packing, on the tiny model.

Tolerance: the 2-process loss curve equals the 1-process one to 1e-4 absolute at every step
(measured: below 1e-6; the only difference is the order of float sums in the gradient
all-reduce). The same bound holds for packed vs padded batches.
"""

from __future__ import annotations

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

# 16 examples, batch 4: 4 steps an epoch.
SHORT_EPOCHS = 5


def _spec(base: Path, out: Path, method: dict, *, epochs: int = SHORT_EPOCHS, **overrides):
    spec = make_spec(base, out, method, **overrides)
    hyper = spec.hyperparameters.model_copy(update={"n_epochs": epochs})
    return spec.model_copy(update={"hyperparameters": hyper})


def _losses(callbacks: RecordingCallbacks) -> list[float]:
    return [loss for _, _, loss, _, _ in callbacks.steps]


@pytest.fixture(scope="module")
def single_process(tiny_base, data_files, tmp_path_factory):
    """The reference: one process, full fine-tuning, validation file, checkpoints every 8."""
    from service.providers.local.trainer import train

    callbacks = RecordingCallbacks()
    spec = _spec(
        tiny_base, tmp_path_factory.mktemp("p1"), {"type": "full"}, checkpoint_every_steps=8
    )
    result = train(spec, data_files[0], data_files[1], callbacks)
    return result, callbacks


def test_two_processes_follow_the_single_process_loss_curve(
    tiny_base, data_files, tmp_path, single_process
):
    from service.providers.local.trainer import train

    reference, expected = single_process
    callbacks = RecordingCallbacks()
    spec = _spec(tiny_base, tmp_path, {"type": "full"}, checkpoint_every_steps=8, processes=2)
    result = train(spec, data_files[0], data_files[1], callbacks)

    # Checkpoints come through the same callback, complete when it runs (checked inside).
    assert_same_curve(callbacks, expected, steps=20, checkpoints=[8, 16])
    assert result.trained_tokens == reference.trained_tokens
    assert abs(result.final_train_loss - reference.final_train_loss) < LOSS_TOLERANCE
    assert (result.final_dir / "model.safetensors").is_file()
    assert (result.final_dir / "result.json").is_file()


def test_cancel_stops_every_rank_within_a_step(tiny_base, data_files, tmp_path):
    from service.providers.local.distributed import RunFiles
    from service.providers.local.trainer import TrainingCancelled, train

    spec = _spec(tiny_base, tmp_path, {"type": "full"}, epochs=200, processes=2)
    events = RunFiles(tmp_path / "run").events
    emitted_at_cancel: list[int] = []

    class CancelAfterThree(RecordingCallbacks):
        def should_cancel(self) -> bool:
            if len(self.steps) >= 3:
                if not emitted_at_cancel:  # how far rank 0 had got when we asked
                    emitted_at_cancel.append(len(events.read_text().splitlines()))
                return True
            return False

    callbacks = CancelAfterThree()
    with pytest.raises(TrainingCancelled) as cancelled:
        train(spec, data_files[0], None, callbacks)
    # Every rank reads the flag before every step: at most the step in flight (plus the one
    # that may have started while the flag was being written) completes.
    assert cancelled.value.completed_steps <= emitted_at_cancel[0] + 2
    assert cancelled.value.completed_steps < 800
    assert not (tmp_path / "final").exists()


@pytest.mark.timeout(600)
def test_a_killed_rank_ends_the_run_and_the_next_attempt_resumes(tiny_base, data_files, tmp_path):
    """One rank SIGKILLed: the run ends with TrainingProcessFailed, and the next attempt
    resumes from the newest checkpoint and loses nothing — the spliced loss curve equals an
    uninterrupted single-process run's (LoRA, 80 steps, a checkpoint every 4)."""
    from service.providers.local.distributed import RunFiles
    from service.providers.local.trainer import TrainingProcessFailed, train

    method = {"type": "lora", "rank": 8, "alpha": 16}
    straight = RecordingCallbacks()
    train(_spec(tiny_base, tmp_path / "straight", method, epochs=20), data_files[0], None, straight)

    spec = _spec(
        tiny_base, tmp_path / "killed", method, epochs=20, processes=2, checkpoint_every_steps=4
    )
    files = RunFiles(spec.output_dir / "run")

    class KillRankOne(RecordingCallbacks):
        def on_checkpoint(self, step, path, metrics) -> None:
            super().on_checkpoint(step, path, metrics)
            if len(self.checkpoints) == 1:
                killed.append(int(files.pid_file(1).read_text()))
                os.kill(killed[0], signal.SIGKILL)

    killed: list[int] = []
    first = KillRankOne()
    with pytest.raises(TrainingProcessFailed) as failed:
        train(spec, data_files[0], None, first)
    # torchrun's report of the dead process comes with the error.
    assert str(killed[0]) in str(failed.value) and "died after step" in str(failed.value)
    assert first.steps[-1][0] < 80 and not (spec.output_dir / "final").exists()

    second = RecordingCallbacks()
    result = train(spec, data_files[0], None, second)
    newest = max(step for step, _, _ in first.checkpoints)
    assert result.resumed_from_step == newest
    assert second.steps[0][0] == newest + 1 and second.steps[-1][0] == 80
    resumed = newest
    spliced = {s: loss for s, _, loss, _, _ in first.steps if s <= resumed}
    spliced.update({s: loss for s, _, loss, _, _ in second.steps})
    reference = {s: loss for s, _, loss, _, _ in straight.steps}
    assert sorted(spliced) == sorted(reference) == list(range(1, 81))
    assert all(abs(spliced[s] - reference[s]) < LOSS_TOLERANCE for s in reference), [
        (s, spliced[s], reference[s]) for s in reference if abs(spliced[s] - reference[s]) >= 1e-4
    ]


def test_job_errors_from_ranks_keep_their_type(tiny_base, tmp_path):
    from service.providers.local.data import DatasetError
    from service.providers.local.trainer import train

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    spec = _spec(tiny_base, tmp_path / "out", {"type": "full"}, processes=2)
    with pytest.raises(DatasetError, match="no assistant message"):
        train(spec, bad, None, RecordingCallbacks())


def test_packing_leaves_the_loss_curve_unchanged(tiny_base, data_files, tmp_path):
    from service.providers.local.trainer import train

    curves = {}
    for packing in (False, True):
        callbacks = RecordingCallbacks()
        spec = _spec(tiny_base, tmp_path / str(packing), {"type": "full"}, packing=packing)
        train(spec, data_files[0], None, callbacks)
        curves[packing] = _losses(callbacks)
    assert all(
        abs(a - b) < LOSS_TOLERANCE for a, b in zip(curves[False], curves[True], strict=True)
    )


def test_packed_rows_keep_examples_apart(tiny_base):
    import torch

    from service.providers.local.batching import pack, pack_rows, pad, token_loss_sum
    from service.providers.local.data import load_dataset
    from service.providers.local.models import load_causal_lm, load_tokenizer
    from tests.support.tiny_model import write_chat_dataset

    assert pack_rows([5, 3, 2, 4], 5) == [[0], [3], [1, 2]]
    assert pack_rows([5, 3, 2, 4], 8) == [[0, 1], [3, 2]]

    tokenizer = load_tokenizer(tiny_base)
    model = load_causal_lm(tiny_base).eval()
    path = write_chat_dataset(Path(tiny_base).parent / "pack.jsonl")
    examples = load_dataset(path, tokenizer, 256).examples[:8]
    packed = pack(examples, tokenizer.pad_token_id, torch.device("cpu"), capacity=64)
    padded = pad(examples, tokenizer.pad_token_id, torch.device("cpu"))
    rows, width = packed.inputs["input_ids"].shape
    assert rows < len(examples) and width <= 64  # really shares rows, within the capacity
    assert packed.inputs["input_ids"].numel() < padded.inputs["input_ids"].numel()
    assert packed.n_targets == padded.n_targets
    with torch.no_grad():
        a, b = float(token_loss_sum(model, packed)), float(token_loss_sum(model, padded))
    assert abs(a - b) < 1e-4 * abs(b)


def test_logits_only_at_scored_positions_leave_the_loss_unchanged(tiny_base):
    """The head and the softmax skip prompt and padding positions; the loss is the same sum,
    and a model that cannot skip them (no ``logits_to_keep``) is probed back to all logits."""
    import torch

    from service.providers.local.batching import pack, pad, token_loss_sum
    from service.providers.local.data import load_dataset
    from service.providers.local.models import load_causal_lm, load_tokenizer
    from service.providers.local.trainer import Supervised
    from tests.support.tiny_model import write_chat_dataset

    tokenizer = load_tokenizer(tiny_base)
    model = load_causal_lm(tiny_base).eval()
    path = write_chat_dataset(Path(tiny_base).parent / "scored.jsonl")
    dataset = load_dataset(path, tokenizer, 256)
    examples = dataset.examples[:8]
    cpu = torch.device("cpu")
    for batch in (pack(examples, tokenizer.pad_token_id, cpu, 256), pad(examples, 0, cpu)):
        assert 0 < batch.scored_positions.numel() < batch.targets.shape[1]
        with torch.no_grad():
            full = float(token_loss_sum(model, batch))
            scored = float(token_loss_sum(model, batch, scored_only=True))
        assert abs(full - scored) < 1e-4 * abs(full)

    class WithoutLogitsToKeep(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
            return self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
            )

    for candidate, keeps in ((model, True), (WithoutLogitsToKeep(model), False)):
        objective = Supervised(dataset, tokenizer.pad_token_id, cpu, True, pack_capacity=256)
        objective.probe(candidate, examples[:4], [0, 1, 2, 3])
        assert (objective.scored_only, objective.packing) == (keeps, True)


def test_gradient_checkpointing_gives_the_same_curve(tiny_base, data_files, tmp_path):
    from service.providers.local.trainer import train

    curves = {}
    for checkpointing in (False, True):
        callbacks = RecordingCallbacks()
        spec = _spec(
            tiny_base,
            tmp_path / str(checkpointing),
            {"type": "lora", "rank": 8, "alpha": 16},
            epochs=2,
            gradient_checkpointing=checkpointing,
        )
        train(spec, data_files[0], None, callbacks)
        curves[checkpointing] = _losses(callbacks)
    assert all(
        abs(a - b) < LOSS_TOLERANCE for a, b in zip(curves[False], curves[True], strict=True)
    )
