"""Default epochs, cost and the job-level estimate from a stored report."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.files.validation.estimate import default_epochs, estimate_cost, estimate_for_job
from service.files.validation.report import Report
from service.files.validation.settings import ValidationSettings, context_limit_for
from service.files.validation.tokens import count_chat_tokens, encoding_for_model, get_counter
from service.files.validation.validator import validate_file

from .helpers import FAST_SETTINGS, clean_chat_lines, write_lines


@pytest.mark.parametrize(
    ("n", "epochs"),
    [(1, 25), (5, 20), (10, 10), (34, 3), (100, 3), (8333, 3), (10_000, 2), (30_000, 1)],
)
def test_default_epochs(n: int, epochs: int) -> None:
    assert default_epochs(n) == epochs


def test_cost_uses_the_price_table() -> None:
    settings = ValidationSettings()
    assert estimate_cost(1_000_000, "gpt-4o-mini-2024-07-18", settings) == 3.0
    assert estimate_cost(2_000_000, "gpt-4.1-mini-2025-04-14", settings) == 10.0
    assert estimate_cost(1_000_000, "gpt-4.1-2025-04-14", settings) == 25.0
    assert estimate_cost(1_000_000, "ft:gpt-4o-mini-2024-07-18:acme::abc", settings) == 3.0


def test_model_tables() -> None:
    settings = ValidationSettings()
    assert encoding_for_model("gpt-4o-mini-2024-07-18") == "o200k_base"
    assert encoding_for_model("gpt-4.1-nano-2025-04-14") == "o200k_base"
    assert encoding_for_model("gpt-3.5-turbo-0125") == "cl100k_base"
    assert encoding_for_model("davinci-002") == "cl100k_base"
    assert context_limit_for("gpt-3.5-turbo-0613", settings) == 4_096
    assert context_limit_for("gpt-3.5-turbo-0125", settings) == 16_385
    assert context_limit_for("gpt-4.1-2025-04-14", settings) == 65_536


def test_cookbook_token_rule() -> None:
    counter = get_counter("o200k_base")
    example = {"messages": [{"role": "user", "content": "hello world", "name": "bob"}]}
    # 3 (priming) + 3 (message) + user(1) + "hello world"(2) + bob(1) + 1 (name)
    expected = 3 + 3 + counter.count("user") + 2 + counter.count("bob") + 1
    assert count_chat_tokens(example, counter) == expected
    assert get_counter("cl100k_base").count("hello world") == 2


def test_estimate_for_job_from_a_stored_report(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "train.jsonl", clean_chat_lines(60))
    report = validate_file(path, workers=1, settings=FAST_SETTINGS)
    stored = Report.model_validate_json(report.model_dump_json())
    auto = estimate_for_job(stored, "gpt-4o-mini-2024-07-18", "auto", FAST_SETTINGS)
    assert auto.n_epochs == 3 and auto.epochs_source == "auto"
    assert auto.billed_tokens == 3 * report.tokens.total
    assert auto.cost_usd == pytest.approx(auto.billed_tokens * 3.0 / 1e6, abs=1e-4)
    assert auto.exact_tokens
    other = estimate_for_job(stored, "gpt-3.5-turbo-0125", 5, FAST_SETTINGS)
    assert other.n_epochs == 5 and other.epochs_source == "requested"
    assert not other.exact_tokens  # counted with o200k, the model uses cl100k
