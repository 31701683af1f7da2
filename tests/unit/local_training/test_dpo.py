"""DPO on the tiny model: the loss against its closed form, the data format, and training.

Training data: each question's own answer preferred, the next question's answer rejected.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.support.tiny_model import QA_PAIRS, preference_examples, write_chat_dataset
from tests.unit.local_training.conftest import RecordingCallbacks, make_spec, reproduced

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_dpo_loss_matches_the_closed_form():
    import torch

    from service.providers.local.preference import dpo_losses

    chosen, rejected = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    ref = torch.tensor([-2.0, -3.0])
    losses, margins = dpo_losses(chosen, rejected, ref, ref, beta=0.5)
    # beta * ((pi_c - ref_c) - (pi_r - ref_r)): 0.5 * (1 - -1) = 1 and 0.5 * (-1 - 1) = -1.
    assert margins.tolist() == pytest.approx([1.0, -1.0])
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-1)), math.log1p(math.exp(1))])
    # At the reference the loss is log 2 whatever beta.
    at_ref, _ = dpo_losses(ref, ref, ref, ref, beta=0.1)
    assert at_ref.tolist() == pytest.approx([math.log(2)] * 2)


def test_preference_pairs_score_only_the_answers(tiny_base):
    from service.providers.local.data import IGNORE_INDEX, DatasetError
    from service.providers.local.models import load_tokenizer
    from service.providers.local.preference import encode_preference

    tokenizer = load_tokenizer(tiny_base)
    record = preference_examples()[0]
    record["input"]["messages"] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "earlier turn"},
        {"role": "user", "content": QA_PAIRS[0][0]},
    ]
    pair = encode_preference(record, tokenizer, 256)
    assert pair is not None
    for example, answer in ((pair.chosen, QA_PAIRS[0][1]), (pair.rejected, QA_PAIRS[1][1])):
        scored = [
            t
            for t, label in zip(example.input_ids, example.labels, strict=True)
            if label != IGNORE_INDEX
        ]
        assert tokenizer.decode(scored) == answer + "<|end|>"  # not the earlier assistant turn
    with pytest.raises(DatasetError, match="preferred_output"):
        encode_preference({**record, "preferred_output": []}, tokenizer, 256)
    with pytest.raises(DatasetError, match="DPO needs"):
        encode_preference({"messages": []}, tokenizer, 256)


def _margins(model_dir: Path, base: Path, data: Path) -> list[float]:
    """log p(preferred) - log p(rejected) per pair under the model in ``model_dir``."""
    import torch

    from service.providers.local.inference import load_for_inference
    from service.providers.local.models import load_tokenizer
    from service.providers.local.preference import load_preference_dataset, reference_logps

    tokenizer = load_tokenizer(base)
    pairs = load_preference_dataset(data, tokenizer, 256).examples
    loaded = load_for_inference(model_dir, "cpu")
    logps = reference_logps(loaded.model, pairs, 8, tokenizer.pad_token_id, torch.device("cpu"))
    return (logps[:, 0] - logps[:, 1]).tolist()


@pytest.fixture(scope="module")
def preference_file(tmp_path_factory) -> Path:
    return write_chat_dataset(tmp_path_factory.mktemp("dpo") / "pairs.jsonl", preference_examples())


@pytest.mark.parametrize(
    "method",
    [
        {"type": "dpo", "beta": 0.1, "sft_weight": 1.0},
        {"type": "dpo", "beta": 0.1, "sft_weight": 1.0, "lora": {"type": "lora", "rank": 8}},
    ],
    ids=["full", "lora"],
)
def test_dpo_makes_the_preferred_answers_the_models_answers(
    tiny_base, preference_file, tmp_path, method
):
    from service.providers.local.inference import LocalModelCache
    from service.providers.local.trainer import train

    callbacks = RecordingCallbacks()
    spec = make_spec(tiny_base, tmp_path, method)
    result = train(spec, preference_file, preference_file, callbacks)

    before = _margins(tiny_base, tiny_base, preference_file)
    after = _margins(result.final_dir, tiny_base, preference_file)
    assert sum(after) / len(after) > sum(before) / len(before) + 10
    assert all(m > 0 for m in after)  # every preferred answer now beats its rejected one
    assert callbacks.evals[-1][1] < callbacks.evals[0][1]
    hits = reproduced(result.final_dir, LocalModelCache(device="cpu"))
    assert len(hits) >= 14, hits
    adapter = (result.final_dir / "adapter_config.json").is_file()
    assert adapter == ("lora" in method)


def test_pure_dpo_widens_the_margin(tiny_base, preference_file, tmp_path):
    """Without the SFT term: the loss falls from log 2 and every margin grows."""
    from service.providers.local.trainer import train

    callbacks = RecordingCallbacks()
    spec = make_spec(tiny_base, tmp_path, {"type": "dpo", "beta": 0.1})
    hyper = spec.hyperparameters.model_copy(update={"n_epochs": 10})
    result = train(
        spec.model_copy(update={"hyperparameters": hyper}), preference_file, None, callbacks
    )
    assert callbacks.steps[0][2] == pytest.approx(math.log(2), abs=1e-3)
    assert result.final_train_loss < 0.2
    before = _margins(tiny_base, tiny_base, preference_file)
    after = _margins(result.final_dir, tiny_base, preference_file)
    assert all(a > b for a, b in zip(after, before, strict=True))


def test_dpo_on_chat_data_is_refused(tiny_base, data_files, tmp_path):
    from service.providers.local.data import DatasetError
    from service.providers.local.trainer import train

    spec = make_spec(tiny_base, tmp_path, {"type": "dpo"})
    with pytest.raises(DatasetError, match="DPO needs"):
        train(spec, data_files[0], None, RecordingCallbacks())
