"""Dataset lines to eval items, item checks, and the gate's held-out split."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest
from service.evals import items


def test_chat_prompt_completion_and_item_lines() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    }
    item, sample = items.to_item(chat)
    assert item == {
        "input": "Capital of France?",
        "ideal": "Paris.",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
    }
    assert sample is None
    item, _ = items.to_item({"prompt": "2+2=", "completion": " 4"})
    assert (item["input"], item["ideal"]) == ("2+2=", "4")
    item, sample = items.to_item({"item": {"q": 1}, "sample": {"output_text": "x"}})
    assert item == {"q": 1} and sample == {"output_text": "x"}
    item, _ = items.to_item(
        {"text": "hi", "label": "greeting"}, {"input_field": "text", "reference_field": "label"}
    )
    assert (item["input"], item["ideal"], item["text"]) == ("hi", "greeting", "hi")


def test_items_are_checked_against_the_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    items.check_items([{"n": 1}], schema, "p")
    with pytest.raises(InvalidRequest) as missing:
        items.check_items([{"n": 1}, {}], schema, "p")
    assert "Item 1" in missing.value.message and missing.value.code == "invalid_item"
    with pytest.raises(InvalidRequest):
        items.check_items([{"n": "one"}], schema, "p")


def test_holdout_split_is_deterministic_and_bounded() -> None:
    lines = [{"i": i} for i in range(100)]
    first = items.holdout_split(lines, 0.2, seed=42, cap=500)
    assert first == items.holdout_split(lines, 0.2, seed=42, cap=500)
    assert len(first) == 20 and first == sorted(set(first))
    assert first != items.holdout_split(lines, 0.2, seed=43, cap=500)
    assert len(items.holdout_split(lines, 0.5, seed=1, cap=10)) == 10
    assert len(items.holdout_split(lines[:3], 0.1, seed=1, cap=10)) == 1
