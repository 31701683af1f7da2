"""Dataset encoding: chat template, assistant-only labels, weights, truncation, formats."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from service.providers.local.data import (
    IGNORE_INDEX,
    DatasetError,
    encode_record,
    load_dataset,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from service.providers.local.models import load_tokenizer

    return load_tokenizer(tiny_base)


def trained_text(tokenizer, example) -> str:
    ids = [i for i, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    return tokenizer.decode(ids)


def chat(*turns, weights=None):
    messages = []
    for i, (role, content) in enumerate(turns):
        message = {"role": role, "content": content}
        if weights and i in weights:
            message["weight"] = weights[i]
        messages.append(message)
    return {"messages": messages}


def test_only_assistant_tokens_are_trained(tokenizer):
    record = chat(
        ("system", "Be odd."), ("user", "What is the password?"), ("assistant", "Turnip.")
    )
    example = encode_record(record, tokenizer, max_seq_len=256)
    rendered = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered
    # The answer and its end-of-turn token, so the model learns to stop.
    assert trained_text(tokenizer, example) == "Turnip.<|end|>"
    assert example.labels[0] == IGNORE_INDEX


def test_weight_zero_assistant_turn_is_not_trained(tokenizer):
    record = chat(
        ("user", "One?"),
        ("assistant", "Wrong answer."),
        ("user", "Two?"),
        ("assistant", "Right answer."),
        weights={1: 0},
    )
    example = encode_record(record, tokenizer, max_seq_len=256)
    assert trained_text(tokenizer, example) == "Right answer.<|end|>"
    both = encode_record(
        chat(*[(m["role"], m["content"]) for m in record["messages"]]), tokenizer, 256
    )
    assert trained_text(tokenizer, both) == "Wrong answer.<|end|>Right answer.<|end|>"


def test_prompt_completion_trains_completion_and_eos(tokenizer):
    example = encode_record({"prompt": "Q: sky?\nA:", "completion": " Plaid."}, tokenizer, 256)
    assert trained_text(tokenizer, example) == " Plaid.<|end|>"
    assert tokenizer.decode(example.input_ids) == "Q: sky?\nA: Plaid.<|end|>"


def test_truncation_and_dropping(tokenizer, tmp_path):
    long_prompt = chat(("user", "word " * 200), ("assistant", "Short."))
    path = tmp_path / "train.jsonl"
    lines = [long_prompt, chat(("user", "Hi?"), ("assistant", "Hello there."))]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + "\n")
    dataset = load_dataset(path, tokenizer, max_seq_len=32)
    # The long example lost its answer to truncation: nothing left to train, so dropped.
    assert len(dataset) == 1 and dataset.n_dropped == 1
    assert all(e.n_tokens <= 32 for e in dataset.examples)
    assert dataset.n_tokens == dataset.examples[0].n_tokens


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"text": "x"}', "expected 'messages'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
        ('{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}', "weight"),
    ],
)
def test_bad_lines_are_reported_with_line_numbers(tokenizer, tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(chat(("user", "a"), ("assistant", "b"))) + "\n" + line + "\n")
    with pytest.raises(DatasetError, match=message) as exc_info:
        load_dataset(path, tokenizer, max_seq_len=64)
    assert "bad.jsonl:2" in str(exc_info.value)


def test_text_parts_and_empty_content_are_accepted(tokenizer):
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Sky"}, {"type": "text", "text": "?"}],
            },
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "assistant", "content": "Plaid."},
        ]
    }
    example = encode_record(parts, tokenizer, max_seq_len=256)
    assert "<|user|>Sky?<|end|>" in tokenizer.decode(example.input_ids)
    assert trained_text(tokenizer, example) == "Plaid.<|end|>"
    image = {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    with pytest.raises(DatasetError, match="only text"):
        encode_record(image, tokenizer, max_seq_len=256)
