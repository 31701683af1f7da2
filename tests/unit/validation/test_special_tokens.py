"""Special-token text in content is flagged with a stable code (issue 11 item 10)."""

from __future__ import annotations

import json
from pathlib import Path

from service.files.validation.special_tokens import (
    local_model_special_tokens,
    tokens_from_tokenizer_dir,
)
from service.files.validation.validator import validate_file

from .helpers import FAST_SETTINGS, chat, lines_of, write_lines


def _with_content(i: int, text: str) -> dict:
    example = chat(i)
    example["messages"][2]["content"] = text
    return example


def test_openai_special_tokens_in_content_are_flagged(tmp_path: Path) -> None:
    examples = [chat(i) for i in range(20)]
    examples[3] = _with_content(3, "Sure.<|endoftext|>")
    examples[5] = _with_content(5, "<|im_start|>assistant\nhi<|im_end|>")
    examples[6] = {"prompt": "say <|endofprompt|>", "completion": " ok"}
    path = write_lines(tmp_path / "t.jsonl", lines_of(examples))
    report = validate_file(path, workers=1, settings=FAST_SETTINGS)
    flagged = [f for f in report.findings if f.code == "special_token_text"]
    assert [f.line for f in flagged] == [4, 6, 7]
    assert "'<|endoftext|>'" in flagged[0].message
    assert "and 1 more" in flagged[1].message
    assert flagged[0].severity == "warning"
    assert report.counts_by_code["special_token_text"] == 3


def test_plain_text_with_angle_brackets_is_not_flagged(tmp_path: Path) -> None:
    examples = [_with_content(i, f"if a <| b or x|> {i}: use <s> tags") for i in range(12)]
    path = write_lines(tmp_path / "t.jsonl", lines_of(examples))
    report = validate_file(path, workers=1, settings=FAST_SETTINGS)
    assert "special_token_text" not in report.counts_by_code


def _tokenizer_dir(folder: Path) -> Path:
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": {"content": "</s>", "special": True},
                "pad_token": None,
                "added_tokens_decoder": {
                    "32000": {"content": "[INST]", "special": True},
                    "32001": {"content": "plainword", "special": False},
                },
            }
        )
    )
    (folder / "tokenizer.json").write_text(
        json.dumps({"added_tokens": [{"content": "<|eot_id|>", "special": True}]})
    )
    return folder


def test_local_model_tokens_come_from_its_tokenizer_files(tmp_path: Path) -> None:
    folder = _tokenizer_dir(tmp_path / "model")
    assert tokens_from_tokenizer_dir(folder) == ("</s>", "<s>", "<|eot_id|>", "[INST]")
    allowed = {"tiny-local": str(folder)}
    assert local_model_special_tokens("tiny-local", allowed) == tokens_from_tokenizer_dir(folder)
    assert local_model_special_tokens("gpt-4o-mini-2024-07-18", allowed) == ()
    assert local_model_special_tokens("missing", {"missing": str(tmp_path / "nope")}) == ()


def test_local_model_special_tokens_are_flagged_only_for_that_model(tmp_path: Path) -> None:
    folder = _tokenizer_dir(tmp_path / "model")
    examples = [chat(i) for i in range(12)]
    examples[2] = _with_content(2, "[INST] do it [/INST] done</s>")
    path = write_lines(tmp_path / "t.jsonl", lines_of(examples))
    plain = validate_file(path, workers=1, settings=FAST_SETTINGS)
    assert "special_token_text" not in plain.counts_by_code
    local = validate_file(
        path, workers=1, settings=FAST_SETTINGS, special_tokens=tokens_from_tokenizer_dir(folder)
    )
    [finding] = [f for f in local.findings if f.code == "special_token_text"]
    assert finding.line == 3 and "'[INST]'" in finding.message and "1 more" in finding.message
