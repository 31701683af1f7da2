"""One failing example per check, a clean file that passes, and a mixed file with known counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.files.validation.validator import validate_file

from .helpers import (
    FAST_SETTINGS,
    chat,
    clean_chat_lines,
    dpo,
    lines_of,
    pc,
    write_lines,
)


def validate_lines(tmp_path: Path, lines: list[str], **kwargs):
    path = write_lines(tmp_path / "train.jsonl", lines)
    kwargs.setdefault("settings", FAST_SETTINGS)
    return validate_file(path, workers=1, **kwargs)


def test_clean_chat_file_passes(tmp_path: Path) -> None:
    report = validate_lines(tmp_path, clean_chat_lines())
    assert report.verdict == "pass", report.counts_by_code
    assert report.format == "chat"
    assert report.examples == 60
    assert report.findings == []
    assert report.tokens.total > 0
    assert report.estimate.n_epochs == 3


def msg(role: str, content: object = "hi", **extra: object) -> dict:
    return {"role": role, "content": content, **extra}


SYSTEM, USER, ASSISTANT = msg("system", "sys"), msg("user", "question"), msg("assistant", "answer")

# (bad line, expected code, expected severity)
CHAT_CASES = [
    ("[1, 2]", "not_an_object", "error"),
    ('{"messages": [', "invalid_json", "error"),
    (json.dumps({"messages": []}), "missing_messages_list", "error"),
    (json.dumps({"messages": [SYSTEM, USER, "oops", ASSISTANT]}), "message_not_object", "error"),
    (
        json.dumps({"messages": [SYSTEM, {"content": "x"}, ASSISTANT]}),
        "message_missing_key",
        "error",
    ),
    (
        json.dumps({"messages": [SYSTEM, {"role": "user"}, ASSISTANT]}),
        "message_missing_key",
        "error",
    ),
    (
        json.dumps({"messages": [SYSTEM, msg("user", weight=1), ASSISTANT]}),
        "message_unrecognized_key",
        "error",
    ),
    (json.dumps({"messages": [msg("developer"), USER, ASSISTANT]}), "unrecognized_role", "error"),
    (json.dumps({"messages": [SYSTEM, msg("user", ""), ASSISTANT]}), "missing_content", "error"),
    (json.dumps({"messages": [SYSTEM, msg("user", None), ASSISTANT]}), "missing_content", "error"),
    (
        json.dumps({"messages": [SYSTEM, msg("user", 42), ASSISTANT]}),
        "invalid_content_type",
        "error",
    ),
    (
        json.dumps({"messages": [SYSTEM, msg("user", [{"type": "audio"}]), ASSISTANT]}),
        "invalid_content_type",
        "error",
    ),
    (json.dumps({"messages": [SYSTEM, USER]}), "example_missing_assistant_message", "error"),
    (
        json.dumps({"messages": [SYSTEM, USER, msg("assistant", weight=2)]}),
        "invalid_weight",
        "error",
    ),
    (
        json.dumps({"messages": [SYSTEM, USER, msg("assistant", weight=0)]}),
        "no_trainable_messages",
        "warning",
    ),
    (
        json.dumps({"messages": [SYSTEM, USER, ASSISTANT, USER]}),
        "last_message_not_assistant",
        "warning",
    ),
    (json.dumps({"messages": [USER, ASSISTANT]}), "no_system_message", "warning"),
    (json.dumps({"messages": [SYSTEM, ASSISTANT]}), "no_user_message", "warning"),
    (json.dumps({"messages": [SYSTEM, USER, ASSISTANT], "tools": "x"}), "invalid_tools", "error"),
    (
        json.dumps({"messages": [SYSTEM, USER, ASSISTANT], "functions": [{"name": "f"}]}),
        "deprecated_functions",
        "warning",
    ),
    (
        json.dumps({"messages": [SYSTEM, USER, ASSISTANT], "parallel_tool_calls": "yes"}),
        "invalid_parallel_tool_calls",
        "error",
    ),
    (
        json.dumps({"messages": [SYSTEM, USER, msg("assistant", None, tool_calls=[{"id": 1}])]}),
        "invalid_tool_call",
        "error",
    ),
    (
        json.dumps(
            {
                "messages": [
                    SYSTEM,
                    USER,
                    msg(
                        "assistant",
                        None,
                        tool_calls=[
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{"},
                            }
                        ],
                    ),
                    msg("tool", "42", tool_call_id="c1"),
                    ASSISTANT,
                ]
            }
        ),
        "tool_call_arguments_not_json",
        "error",
    ),
    (
        json.dumps(
            {
                "messages": [
                    SYSTEM,
                    USER,
                    msg(
                        "assistant",
                        None,
                        tool_calls=[
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "g", "arguments": "{}"},
                            }
                        ],
                    ),
                    msg("tool", "42", tool_call_id="c1"),
                    ASSISTANT,
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            }
        ),
        "tool_call_unknown_function",
        "warning",
    ),
    (
        json.dumps({"messages": [SYSTEM, USER, msg("tool", "42", tool_call_id="nope"), ASSISTANT]}),
        "tool_call_id_mismatch",
        "error",
    ),
    (json.dumps({"messages": [SYSTEM, USER, ASSISTANT], "extra": 1}), "unknown_key", "warning"),
    (json.dumps({"instruction": "x", "output": "y"}), "unknown_format", "error"),
    (json.dumps(pc(1)), "mixed_formats", "error"),
    ("", "blank_line", "warning"),
    (json.dumps(chat(0)), "exact_duplicate", "warning"),
    (
        json.dumps(chat(0)).replace("Question number 0", "QUESTION  number 0!"),
        "near_duplicate",
        "warning",
    ),
    (
        json.dumps(
            chat(999, messages=[SYSTEM, msg("user", "mail me at a.b@example.org"), ASSISTANT])
        ),
        "pii_email",
        "warning",
    ),
    (
        json.dumps({"messages": [SYSTEM, msg("user", "call +1 (415) 555-0199"), ASSISTANT]}),
        "pii_phone",
        "warning",
    ),
    (
        json.dumps({"messages": [SYSTEM, msg("user", "card 4111 1111 1111 1111"), ASSISTANT]}),
        "pii_card_number",
        "error",
    ),
    (
        json.dumps({"messages": [SYSTEM, msg("user", "key sk-" + "a1B2" * 8), ASSISTANT]}),
        "pii_api_key",
        "error",
    ),
]


@pytest.mark.parametrize(
    ("bad_line", "code", "severity"), CHAT_CASES, ids=[c[1] for c in CHAT_CASES]
)
def test_each_chat_check_fires_on_its_line(
    tmp_path: Path, bad_line: str, code: str, severity: str
) -> None:
    lines = clean_chat_lines(12)
    lines.insert(5, bad_line)  # line 6
    report = validate_lines(tmp_path, lines)
    assert report.counts_by_code.get(code) == 1, report.counts_by_code
    finding = next(f for f in report.findings if f.code == code)
    assert finding.line == 6
    assert finding.severity == severity
    assert finding.message and finding.suggestion
    assert report.verdict == ("block" if severity == "error" else "warn")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xef\xbb\xbf", "encoding_bom"),
        (b"\xff\xfe", "encoding_invalid_utf8"),
        (b"\x00", "encoding_nul_byte"),
    ],
)
def test_encoding_faults(tmp_path: Path, data: bytes, code: str) -> None:
    lines = [line.encode() for line in clean_chat_lines(12)]
    if code == "encoding_bom":
        lines[0] = data + lines[0]
    else:
        lines[3] = lines[3][:20] + data + lines[3][20:]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = validate_file(path, workers=1, settings=FAST_SETTINGS)
    assert report.counts_by_code.get(code) == 1, report.counts_by_code
    assert report.verdict == "block"
    if code == "encoding_bom":  # the BOM is reported, and the first example still parses
        assert report.examples == 12


def test_crlf_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes("".join(line + "\r\n" for line in clean_chat_lines(60)).encode())
    report = validate_file(path, workers=1, settings=FAST_SETTINGS)
    assert report.counts_by_code == {"encoding_crlf": 60}
    assert report.verdict == "warn"
    assert report.examples == 60


def test_example_counts(tmp_path: Path) -> None:
    assert validate_lines(tmp_path, clean_chat_lines(9)).counts_by_code == {"too_few_examples": 1}
    assert validate_lines(tmp_path, clean_chat_lines(20)).counts_by_code == {"few_examples": 1}
    assert validate_lines(tmp_path, []).counts_by_code == {"empty_file": 1}


def test_too_long_uses_the_models_context_limit(tmp_path: Path) -> None:
    settings = FAST_SETTINGS.model_copy(update={"context_limits": {"gpt-4o-mini": 40}})
    report = validate_lines(tmp_path, clean_chat_lines(60), settings=settings)
    assert report.context_limit == 40
    assert report.counts_by_code["too_long"] == report.tokens.n_too_long > 0
    assert report.estimate.billed_tokens_per_epoch < report.tokens.total


def test_train_validation_leak(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.jsonl", clean_chat_lines(60))
    valid = write_lines(tmp_path / "valid.jsonl", clean_chat_lines(5, start=58))
    report = validate_file(train, validation_path=valid, workers=1, settings=FAST_SETTINGS)
    leaks = [f for f in report.findings if f.code == "train_validation_leak"]
    assert [(f.file, f.line) for f in leaks] == [("validation", 1), ("validation", 2)]
    assert "training line 59" in leaks[0].message
    assert report.validation_file is not None and report.validation_file.examples == 5


def test_findings_are_capped_but_counts_are_not(tmp_path: Path) -> None:
    settings = FAST_SETTINGS.model_copy(update={"findings_cap_per_code": 3})
    lines = clean_chat_lines(60) + ["[]"] * 10
    report = validate_lines(tmp_path, lines, settings=settings)
    assert report.counts_by_code["not_an_object"] == 10
    assert sum(f.code == "not_an_object" for f in report.findings) == 3
    assert report.findings_truncated


def test_mixed_file_with_known_counts(tmp_path: Path) -> None:
    lines = clean_chat_lines(40)
    faults = {
        "not_an_object": ["[1]", "2", '"s"'],
        "invalid_json": ["{", "{'a': 1}"],
        "blank_line": ["", "   "],
        "exact_duplicate": [lines[0], lines[1], lines[2], lines[0]],
        "example_missing_assistant_message": [json.dumps({"messages": [SYSTEM, USER]})] * 1,
        "pii_email": [
            json.dumps(chat(500, messages=[SYSTEM, msg("user", "x@y.com hi"), ASSISTANT]))
        ],
    }
    for group in faults.values():
        lines.extend(group)
    report = validate_lines(tmp_path, lines)
    for code, group in faults.items():
        assert report.counts_by_code[code] == len(group), code
    assert report.examples == 40 + 4 + 1 + 1
    assert report.lines == len(lines)
    assert report.verdict == "block"


def test_prompt_completion_legacy_checks(tmp_path: Path) -> None:
    examples = [
        {"prompt": f"Tell me about item {i}", "completion": f"ITEM {i} IS GOOD"} for i in range(30)
    ]
    examples.append({"Prompt": "x", "completion": " y"})
    examples.append({"prompt": "Tell me about item z", "completion": ""})
    examples.append({"prompt": "Tell me about item " + "w" * 6000, "completion": "9" * 5000})
    report = validate_lines(tmp_path, lines_of(examples))
    assert report.format == "prompt_completion"
    counts = report.counts_by_code
    for code in (
        "missing_column",
        "empty_completion",
        "long_example",
        "missing_prompt_separator",
        "missing_completion_ending",
        "completion_no_leading_space",
        "uppercase_completions",
        "common_prompt_prefix",
    ):
        assert counts.get(code), (code, counts)
    rename = next(f for f in report.findings if f.code == "missing_column")
    assert '"Prompt"' in rename.suggestion
    assert report.legacy["task_type"] == "conditional generation"


def test_prompt_completion_identical_and_classification(tmp_path: Path) -> None:
    same = [{"prompt": "same ->", "completion": " same\n"}] * 12
    report = validate_lines(tmp_path, lines_of(same))
    assert report.counts_by_code.get("identical_prompts") == 1
    classes = [pc(i) | {"completion": " positive\n" if i % 2 else " negative\n"} for i in range(30)]
    report = validate_lines(tmp_path, lines_of(classes))
    assert report.legacy["task_type"] == "classification"
    assert report.legacy["common_prompt_suffix"] == " ->"
    assert "missing_prompt_separator" not in report.counts_by_code


def test_dpo_checks(tmp_path: Path) -> None:
    examples = [dpo(i) for i in range(60)]
    bad_output = dpo(100) | {"preferred_output": [{"role": "user", "content": "x"}]}
    identical = dpo(101) | {"non_preferred_output": dpo(101)["preferred_output"]}
    legacy_names = {
        "input": dpo(102)["input"],
        "preferred_completion": dpo(102)["preferred_output"],
        "non_preferred_completion": dpo(102)["non_preferred_output"],
    }
    no_input = {k: v for k, v in dpo(103).items() if k != "input"} | {"input": {}}
    report = validate_lines(
        tmp_path, lines_of([*examples, bad_output, identical, legacy_names, no_input])
    )
    assert report.format == "dpo"
    assert report.counts_by_code == {
        "dpo_invalid_output": 1,
        "dpo_identical_outputs": 1,
        "dpo_legacy_field_names": 1,
        "dpo_invalid_input": 1,
    }
    clean = validate_lines(tmp_path, lines_of(examples))
    assert clean.verdict == "pass" and clean.tokens.total > 0


def test_tool_calling_chat_is_clean(tmp_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    examples = [
        {
            "messages": [
                SYSTEM,
                msg("user", f"compute {i}"),
                msg("assistant", None, tool_calls=[call]),
                msg("tool", "42", tool_call_id="c1"),
                msg("assistant", [{"type": "text", "text": f"It is 42 ({i})."}], weight=1),
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "parallel_tool_calls": False,
        }
        for i in range(60)
    ]
    report = validate_lines(tmp_path, lines_of(examples))
    assert report.verdict == "pass", report.counts_by_code


def test_parallel_scan_matches_sequential(tmp_path: Path) -> None:
    lines = clean_chat_lines(300)
    lines[10] = "[1]"
    lines[250] = lines[3]
    lines.insert(120, "")
    path = write_lines(tmp_path / "train.jsonl", lines)
    sequential = validate_file(path, workers=1, settings=FAST_SETTINGS)
    settings = FAST_SETTINGS.model_copy(update={"chunk_bytes": 4096, "parallel_min_bytes": 0})
    parallel = validate_file(path, workers=2, settings=settings)
    assert parallel.counts_by_code == sequential.counts_by_code
    assert [(f.line, f.code) for f in parallel.findings] == [
        (f.line, f.code) for f in sequential.findings
    ]
    assert parallel.tokens == sequential.tokens
    assert parallel.examples == sequential.examples == 299
    # Two helpers beside the calling process, results still merged in file order.
    three = validate_file(path, workers=3, settings=settings)
    assert [(f.line, f.code) for f in three.findings] == [
        (f.line, f.code) for f in sequential.findings
    ]
    assert three.tokens == sequential.tokens


def test_mixed_formats_are_counted_beyond_the_cap(tmp_path: Path) -> None:
    settings = FAST_SETTINGS.model_copy(update={"findings_cap_per_code": 2})
    lines = clean_chat_lines(60) + lines_of([pc(i) for i in range(5)])
    report = validate_lines(tmp_path, lines, settings=settings)
    assert report.counts_by_code["mixed_formats"] == 5
    assert [f.line for f in report.findings if f.code == "mixed_formats"] == [61, 62]


def test_letter_case_counts_match_str_isupper_and_islower() -> None:
    from service.files.validation.checks import _letter_cases

    for text in ("", "Hello World 123", "ÉCOLE école Straße ǅ", "ABC\n\tdef!?", "ß" * 3):
        upper = sum(1 for c in text if c.isupper())
        lower = sum(1 for c in text if c.islower())
        assert _letter_cases(text) == (upper, lower), text
