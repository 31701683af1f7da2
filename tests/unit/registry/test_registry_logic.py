"""Pure registry rules: which notices are due, the method mapping between providers, the
operator's replacements, configured shutdown dates and provider kinds."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from service.errors import InvalidRequest
from service.registry.alerts import _notices_due
from service.registry.plan import suggested_target
from service.registry.retrain import map_method
from service.registry.shutdown import base_of, configured_shutdown, kind_of_provider


@pytest.mark.parametrize(
    ("days_left", "sent", "due"),
    [
        (45, set(), []),
        (30, set(), [("shutdown_approaching:30", 30, True)]),
        (29, {"shutdown_approaching:30"}, []),
        # First seen five days out: the 7-day notice goes, the 30-day one is recorded unsent.
        (5, set(), [("shutdown_approaching:7", 7, True), ("shutdown_approaching:30", 30, False)]),
        (
            1,
            {"shutdown_approaching:30", "shutdown_approaching:7"},
            [("shutdown_approaching:1", 1, True)],
        ),
        (0, {"shutdown_approaching:1"}, [("retired", None, True)]),
        (-3, {"retired"}, []),
    ],
)
def test_each_notice_is_due_once_and_only_the_most_urgent_is_sent(
    days_left: int, sent: set[str], due: list[tuple[str, int | None, bool]]
) -> None:
    assert _notices_due(days_left, sent) == due


def test_supervised_becomes_lora_locally_and_keeps_openai_hyperparameters() -> None:
    stored = {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8, "seed_x": 1}},
    }
    assert map_method(stored, None, to_local=True) == {
        "type": "lora",
        "lora": {"hyperparameters": {"n_epochs": 3, "batch_size": 8}},
    }
    assert map_method(stored, None, to_local=False)["type"] == "supervised"


def test_dpo_keeps_beta_and_local_methods_become_supervised_upstream() -> None:
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}}
    assert map_method(dpo, None, to_local=True) == {
        "type": "dpo",
        "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.2}},
    }
    lora = {"type": "lora", "lora": {"rank": 16, "hyperparameters": {"n_epochs": 4}}}
    assert map_method(lora, None, to_local=False) == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 4}},
    }
    assert map_method(lora, None, to_local=True) == lora
    # Top-level (deprecated) hyperparameters of an old job are read too.
    assert map_method(None, {"n_epochs": 5}, to_local=False) == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 5}},
    }


def test_reinforcement_cannot_be_replayed_elsewhere() -> None:
    with pytest.raises(InvalidRequest) as caught:
        map_method({"type": "reinforcement", "reinforcement": {}}, None, to_local=True)
    assert caught.value.param == "method"


def test_replacements_and_shutdown_dates_match_the_longest_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service import config

    settings = config.Settings(
        registry={  # type: ignore[arg-type]
            "replacements": {"gpt-4o": "local:big", "gpt-4o-mini": "local:small"},
        }
    )
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    monkeypatch.setattr("service.registry.plan.get_settings", lambda: settings)
    monkeypatch.setattr("service.registry.shutdown.get_settings", lambda: settings)
    assert suggested_target("gpt-4o-mini-2024-07-18") == {"provider": "local", "model": "small"}
    assert suggested_target("gpt-4o-2024-08-06") == {"provider": "local", "model": "big"}
    assert suggested_target("llama") is None
    assert configured_shutdown("openai", "gpt-4.1-nano-2025-04-14") == dt.date(2026, 10, 23)
    assert configured_shutdown("openai", "gpt-4.1-mini-2025-04-14") == dt.date(2027, 1, 14)
    assert configured_shutdown("openai_compatible", "gpt-4o-mini") is None


def test_provider_kinds_and_base_names() -> None:
    def provider(name: str, url: str | None) -> SimpleNamespace:
        return SimpleNamespace(name=name, credentials=SimpleNamespace(base_url=url))

    assert kind_of_provider(provider("openai", "https://api.openai.com/v1")) == "openai"
    assert kind_of_provider(provider("openai", "http://127.0.0.1:8765/v1")) == "openai_compatible"
    assert kind_of_provider(provider("azure_openai", None)) == "azure_openai"
    assert base_of("ft:gpt-4o-mini-2024-07-18:acme:support:ftjob-1") == "gpt-4o-mini-2024-07-18"
    assert base_of("tiny") == "tiny"
