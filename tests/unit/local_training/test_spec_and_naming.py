"""Spec parsing, "auto" hyperparameters, model naming and the base-model allow-list.

None of this needs torch, so it runs without the train extra too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.providers.local.models import UnknownBaseModel, resolve_base_model
from service.providers.local.naming import fine_tuned_model_name
from service.providers.local.settings import LocalTrainingSettings
from service.providers.local.spec import (
    TRAINING_METHOD,
    FreezeMethod,
    Hyperparameters,
    LoraMethod,
    TrainingSpec,
    auto_batch_size,
    auto_epochs,
)


def test_method_is_a_discriminated_union_with_defaults():
    assert TRAINING_METHOD.validate_python({"type": "full"}).type == "full"
    freeze = TRAINING_METHOD.validate_python({"type": "freeze"})
    assert freeze == FreezeMethod(trainable_layers=1, trainable_modules=None, train_lm_head=True)
    lora = TRAINING_METHOD.validate_python({"type": "lora", "rank": 4})
    assert isinstance(lora, LoraMethod)
    assert (lora.rank, lora.alpha, lora.dropout) == (4, 16, 0.0)
    assert lora.target_modules == "all-linear" and lora.train_lm_head


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "dpo", "beta": 0},
        {"type": "dpo", "lora": {"type": "lora", "rank": 0}},
        {"type": "reinforcement"},
        {"type": "lora", "rank": 0},
        {"type": "lora", "target_modules": []},
        {"type": "lora", "dropout": 1.0},
        {"type": "freeze", "trainable_layers": -1},
        {"type": "freeze", "trainable_modules": [""]},
        {"type": "full", "rank": 8},
    ],
)
def test_invalid_methods_are_rejected(payload):
    with pytest.raises(ValidationError):
        TRAINING_METHOD.validate_python(payload)


@pytest.mark.parametrize(
    ("n", "epochs"),
    [(1, 25), (10, 10), (20, 5), (33, 3), (34, 3), (8333, 3), (8334, 2), (10**6, 1)],
)
def test_auto_epochs_follow_openai_rule(n, epochs):
    assert auto_epochs(n) == epochs


def test_auto_hyperparameters_resolve_against_dataset_size():
    resolved = Hyperparameters().resolve(40)
    assert resolved.n_epochs == 3 and resolved.batch_size == 4
    assert resolved.learning_rate_multiplier == 1.0
    assert auto_batch_size(3) == 1 and auto_batch_size(10_000) == 8
    explicit = Hyperparameters(n_epochs=2, batch_size=16, learning_rate_multiplier=0.5).resolve(40)
    assert (explicit.n_epochs, explicit.batch_size, explicit.learning_rate_multiplier) == (
        2,
        16,
        0.5,
    )
    with pytest.raises(ValidationError):
        Hyperparameters(learning_rate_multiplier=0)


def test_spec_from_settings_takes_rates_and_cadences():
    settings = LocalTrainingSettings(
        torch_threads=3, checkpoint_every_steps=7, learning_rate_lora=5e-4
    )
    spec = TrainingSpec.from_settings(
        settings,
        base_model_path=Path("/m"),
        method=LoraMethod(),
        hyperparameters=Hyperparameters(learning_rate_multiplier=2.0),
        seed=1,
        output_dir=Path("/o"),
    )
    assert spec.torch_threads == 3 and spec.checkpoint_every_steps == 7
    assert spec.learning_rate_base == 5e-4
    default = TrainingSpec(base_model_path=Path("/m"), output_dir=Path("/o"), method=FreezeMethod())
    assert default.learning_rate_base == 3e-3


def test_settings_defaults():
    settings = LocalTrainingSettings()
    assert settings.allowed_base_models == {}
    assert settings.torch_threads == 1 and settings.log_every_steps == 1
    assert settings.max_seq_len is None and settings.device == "auto"
    assert settings.inference_cache_size == 2
    rates = [settings.base_learning_rate(m) for m in ("full", "freeze", "lora")]
    assert rates == [1e-3, 3e-3, 3e-3]


def test_fine_tuned_model_name():
    assert fine_tuned_model_name("tiny-llama", "acme", "v1", "ftjob-1") == (
        "ft:tiny-llama:acme:v1:ftjob-1"
    )
    assert fine_tuned_model_name("tiny", "acme", None, "ftjob-2") == "ft:tiny:acme::ftjob-2"
    # ':' would shift every later field for a parser splitting on ':'.
    name = fine_tuned_model_name("org/m:1", "te:am", "my suffix:x", "ftjob-3")
    assert name == "ft:org/m-1:te-am:my-suffix-x:ftjob-3"
    assert name.count(":") == 4


def test_resolve_base_model_only_allows_listed_names(tmp_path):
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    settings = LocalTrainingSettings(
        allowed_base_models={"tiny": str(model_dir), "gone": str(tmp_path / "missing")}
    )
    assert resolve_base_model("tiny", settings) == model_dir
    with pytest.raises(UnknownBaseModel) as exc_info:
        resolve_base_model(str(model_dir), settings)  # a raw path is not an allowed name
    assert exc_info.value.allowed == ["gone", "tiny"]
    with pytest.raises(UnknownBaseModel, match="does not exist"):
        resolve_base_model("gone", settings)
    with pytest.raises(UnknownBaseModel):
        resolve_base_model("tiny", LocalTrainingSettings())
