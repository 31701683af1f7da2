"""How a create request becomes a local job: the method extension, its checks, the provider
choice. Torch-free, like the API that runs it."""

from __future__ import annotations

import pytest

from service.config import LocalSettings, Settings
from service.errors import InvalidRequest
from service.jobs.runners.local import check_request
from service.jobs.schemas import CreateJobInput
from service.providers.local.requests import training_method
from service.providers.local.spec import FreezeMethod, FullMethod, Hyperparameters, LoraMethod

SETTINGS = Settings(local=LocalSettings(allowed_base_models={"tiny": "/models/tiny"}))


def _request(method: dict | None = None, **fields) -> CreateJobInput:
    body = {"model": "tiny", "training_file": "file-abc", "provider": "local", **fields}
    if method is not None:
        body["method"] = method
    return CreateJobInput.model_validate(body)


def test_each_method_maps_to_the_trainer_with_its_hyperparameters():
    hyper = {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.5}
    lora, hp = training_method(
        {"type": "lora", "lora": {"hyperparameters": hyper, "rank": 4, "alpha": 8}}, None
    )
    assert lora == LoraMethod(rank=4, alpha=8)
    assert hp == Hyperparameters(n_epochs=3, batch_size=2, learning_rate_multiplier=0.5)
    freeze, _ = training_method(
        {"type": "freeze", "freeze": {"trainable_layers": 2, "trainable_modules": ["mlp"]}}, None
    )
    assert freeze == FreezeMethod(trainable_layers=2, trainable_modules=["mlp"])
    full, hp = training_method({"type": "full", "full": {}}, {"n_epochs": 2})
    assert full == FullMethod() and hp.n_epochs == 2


def test_supervised_and_no_method_mean_full_fine_tuning():
    method, hp = training_method(None, {"batch_size": 4})
    assert method == FullMethod() and hp.batch_size == 4 and hp.n_epochs == "auto"
    method, hp = training_method(
        {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5}}}, None
    )
    assert method == FullMethod() and hp.n_epochs == 5


def test_request_extension_round_trips_through_the_schema():
    request = _request({"type": "lora", "lora": {"rank": 16, "target_modules": ["q_proj"]}})
    stored = request.method.model_dump(exclude_none=True)
    assert stored == {"type": "lora", "lora": {"rank": 16, "target_modules": ["q_proj"]}}
    assert training_method(stored, None)[0].target_modules == ["q_proj"]


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"model": "gpt-4o-mini-2024-07-18"}, "model_not_available", "model"),
        (
            {"method": {"type": "reinforcement", "reinforcement": {"grader": {}}}},
            "invalid_method",
            "method",
        ),
        (
            {"method": {"type": "lora", "lora": {"target_modules": []}}},
            "invalid_method",
            "method",
        ),
        ({"resources": {"strategy": "zero3"}}, "invalid_resources", "resources.strategy"),
        ({"resources": {"processes": 2}}, "invalid_resources", "resources.processes"),
    ],
)
def test_what_a_worker_would_refuse_is_refused_at_create(fields, code, param):
    method = fields.pop("method", None)
    with pytest.raises(InvalidRequest) as refused:
        check_request(_request(method, **fields), SETTINGS)
    assert refused.value.code == code and refused.value.param == param


def test_allowed_model_and_method_pass():
    check_request(_request({"type": "freeze", "freeze": {"trainable_layers": 1}}), SETTINGS)
    check_request(_request(None), SETTINGS)


def test_unknown_local_method_fields_are_rejected_by_the_schema():
    with pytest.raises(ValueError):
        _request({"type": "lora", "lora": {"rnk": 4}})
