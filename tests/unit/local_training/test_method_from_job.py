"""Pure request mapping for the local provider at scale: DPO methods and resources."""

from __future__ import annotations

import pytest

from service.providers.local.settings import LocalTrainingSettings
from service.providers.local.spec import (
    DpoMethod,
    FullMethod,
    LoraMethod,
    Resources,
    ResourcesError,
    TrainingSpec,
    check_resources,
    method_from_job,
    rate_key,
    resources_from_job,
    trains_adapter,
)


def test_openai_dpo_method_maps_to_full_dpo_with_beta():
    method, hyper = method_from_job(
        {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3, "n_epochs": 2}}}, None
    )
    assert method == DpoMethod(beta=0.3)
    assert hyper.n_epochs == 2
    assert not trains_adapter(method) and rate_key(method) == "dpo"


def test_dpo_auto_beta_and_lora_variant():
    method, hyper = method_from_job(
        {
            "type": "dpo",
            "dpo": {
                "hyperparameters": {"beta": "auto", "batch_size": 4},
                "lora": {"rank": 4},
                "sft_weight": 0.5,
            },
        },
        None,
    )
    assert isinstance(method, DpoMethod)
    assert method.beta == 0.1 and method.sft_weight == 0.5
    assert method.lora == LoraMethod(rank=4)
    assert hyper.batch_size == 4
    assert trains_adapter(method) and rate_key(method) == "lora"


def test_supervised_and_ftq_methods_still_map():
    assert method_from_job(None, {"n_epochs": 3})[0] == FullMethod()
    assert method_from_job({"type": "supervised"}, None)[0] == FullMethod()
    assert method_from_job({"type": "lora", "lora": {"rank": 2}}, None)[0] == LoraMethod(rank=2)


@pytest.mark.parametrize(
    "method",
    [
        {"type": "reinforcement"},
        {"type": "dpo", "dpo": {"hyperparameters": {"beta": 5}}},
        {"type": "dpo", "dpo": {"lora": {"rank": 0}}},
        {"type": "dpo", "dpo": {"unknown": 1}},
    ],
)
def test_bad_methods_raise_value_errors(method):
    with pytest.raises(ValueError):
        method_from_job(method, None)


def test_resources_are_checked_against_the_worker_limit():
    settings = LocalTrainingSettings(max_processes=4)
    assert check_resources(None, settings) == Resources(processes=1, strategy="auto")
    assert check_resources({}, settings).processes == 1
    assert check_resources({"processes": 4}, settings).processes == 4
    with pytest.raises(ValueError, match="exceeds"):
        check_resources({"processes": 5}, settings)
    with pytest.raises(ValueError, match="MAX_PROCESSES"):
        check_resources({"processes": 2}, LocalTrainingSettings())
    for bad in ({"processes": 0}, {"processes": "2"}, {"processes": True}, {"gpus": 1}, [2]):
        with pytest.raises(ValueError):
            check_resources(bad, settings)  # type: ignore[arg-type]


def test_the_strategy_is_one_of_auto_ddp_fsdp():
    settings = LocalTrainingSettings(max_processes=4)
    for strategy in ("auto", "ddp", "fsdp"):
        assert check_resources({"processes": 2, "strategy": strategy}, settings) == Resources(
            processes=2, strategy=strategy
        )
    for bad in ("FSDP", "zero3", "", 2, None, ["fsdp"]):
        with pytest.raises(ResourcesError, match="auto, ddp, fsdp") as refused:
            check_resources({"processes": 2, "strategy": bad}, settings)
        assert refused.value.param == "resources.strategy"
    # Sharding over one process shards nothing: refused rather than silently not done.
    with pytest.raises(ResourcesError, match="2 or more") as one:
        check_resources({"strategy": "fsdp"}, settings)
    assert one.value.param == "resources.strategy"
    assert check_resources({"strategy": "ddp"}, settings) == Resources(strategy="ddp")
    # What the worker reads back from the stored request.
    assert resources_from_job({"processes": 2, "strategy": "fsdp"}) == Resources(
        processes=2, strategy="fsdp"
    )
    assert resources_from_job(None) == Resources()


def test_spec_from_settings_carries_the_run_options(tmp_path):
    settings = LocalTrainingSettings(max_processes=2, gradient_checkpointing=True, packing=False)
    spec = TrainingSpec.from_settings(
        settings,
        base_model_path=tmp_path,
        method=DpoMethod(),
        hyperparameters=method_from_job({"type": "dpo"}, None)[1],
        seed=1,
        output_dir=tmp_path,
        processes=2,
    )
    assert (spec.processes, spec.gradient_checkpointing, spec.packing) == (2, True, False)
    assert spec.learning_rate_base == settings.learning_rate_dpo
    with pytest.raises(ValueError, match="limit"):
        TrainingSpec.from_settings(
            settings,
            base_model_path=tmp_path,
            method=FullMethod(),
            hyperparameters=spec.hyperparameters,
            seed=1,
            output_dir=tmp_path,
            processes=3,
        )
