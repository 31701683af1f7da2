"""The scanner must turn any input into findings, never into an exception: arbitrary bytes,
arbitrary JSON lines, and well-shaped examples with arbitrary JSON in every position."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.files.validation.checks import ChunkScanner, ScanConfig
from service.files.validation.settings import ValidationSettings
from service.files.validation.validator import validate_file

CONFIG = ScanConfig(
    encoding="o200k_base",
    context_limit=65_536,
    findings_cap=100,
    pii_enabled=True,
    pii_severity={},
    near_min_chars=20,
    legacy_long_chars=10_000,
    token_cache_size=64,
)

# Text with lone surrogates and special-token text: both have crashed or fooled tokenizers.
texts = st.text(max_size=20) | st.sampled_from(["", "\ud800", "<|endoftext|>", "user", " "])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "messages",
                    "role",
                    "content",
                    "weight",
                    "tool_calls",
                    "function",
                    "arguments",
                    "prompt",
                    "completion",
                    "input",
                    "preferred_output",
                    "non_preferred_output",
                    "tools",
                    "type",
                    "text",
                    "id",
                    "tool_call_id",
                    "name",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def scan(data: bytes) -> None:
    scanner = ChunkScanner(CONFIG, 0, len(data))
    scanner.scan_bytes(data, at_file_start=True)
    result = scanner.result
    assert sum(result.counts.values()) >= len(result.findings)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    scan(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=6))
def test_arbitrary_json_lines_never_raise(values: list[object]) -> None:
    scan("\n".join(json.dumps(v) for v in values).encode())


ROLES = st.sampled_from(["system", "user", "assistant", "tool", "function", "developer"])
MESSAGE_KEYS = ["role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id"]


def _value_or(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-formed shape, sometimes any JSON value in its place."""
    return st.one_of(shape, shape, json_values)


tool_calls = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": _value_or(st.text(max_size=4)),
            "type": _value_or(st.just("function")),
            "function": _value_or(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": _value_or(st.text(max_size=4)),
                        "arguments": _value_or(st.sampled_from(["{}", "{", '{"a": 1}'])),
                    },
                )
            ),
        },
    ),
    max_size=2,
)
content_parts = st.lists(
    st.fixed_dictionaries(
        {}, optional={"type": _value_or(st.just("text")), "text": _value_or(texts)}
    ),
    max_size=2,
)
messages = st.lists(
    _value_or(
        st.fixed_dictionaries(
            {},
            optional={
                "role": _value_or(ROLES),
                "content": _value_or(texts | content_parts),
                "name": json_values,
                "weight": _value_or(st.sampled_from([0, 1])),
                "tool_calls": _value_or(tool_calls),
                "function_call": json_values,
                "tool_call_id": json_values,
            },
        )
    ),
    max_size=4,
)
tools = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": _value_or(st.just("function")),
            "function": _value_or(
                st.fixed_dictionaries({}, optional={"name": _value_or(st.text(max_size=4))})
            ),
        },
    ),
    max_size=2,
)
chat_examples = st.fixed_dictionaries(
    {"messages": _value_or(messages)},
    optional={
        "tools": _value_or(tools),
        "parallel_tool_calls": json_values,
        "functions": json_values,
    },
)
dpo_examples = st.fixed_dictionaries(
    {
        "input": _value_or(
            st.fixed_dictionaries({"messages": _value_or(messages)}, optional={"tools": tools})
        ),
    },
    optional={
        "preferred_output": _value_or(messages),
        "non_preferred_output": _value_or(messages),
        "preferred_completion": _value_or(messages),
    },
)
prompt_completion_examples = st.fixed_dictionaries(
    {},
    optional={
        "prompt": _value_or(texts),
        "completion": _value_or(texts),
        "Prompt": json_values,
        "text": json_values,
    },
)
examples = chat_examples | dpo_examples | prompt_completion_examples


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(examples, min_size=1, max_size=4))
def test_examples_with_any_json_in_any_position_never_raise(values: list[Any]) -> None:
    scan("\n".join(json.dumps(v) for v in values).encode())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(examples | json_values, min_size=1, max_size=12))
def test_whole_validator_never_raises(values: list[Any]) -> None:
    """Through validate_file: merging, duplicates, legacy checks, the report model."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        path.write_text("".join(json.dumps(v) + "\n" for v in values), encoding="utf-8")
        report = validate_file(
            path, workers=1, settings=ValidationSettings(dedup_capacity=1 << 10, min_examples=1)
        )
    assert report.examples <= len(values)


def test_issue_11_item_10_message_without_role_and_role_that_is_a_list() -> None:
    """Both crashed the token counter / the role lookup before; now they are findings."""
    lines = [
        {"messages": [{"content": "hi", "name": "x"}, {"role": "assistant", "content": "ok"}]},
        {"messages": [{"role": ["user"], "content": "hi"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": {"a": 1}, "content": {"b": 2}}]},
        {"messages": [{"role": "user", "content": [{"type": ["text"], "text": 1}]}]},
    ]
    scanner = ChunkScanner(CONFIG, 0, 1)
    scanner.scan_bytes("\n".join(json.dumps(v) for v in lines).encode(), at_file_start=True)
    counts = scanner.result.counts
    assert counts["message_missing_key"] >= 1
    assert counts["unrecognized_role"] == 2
    assert counts["invalid_content_type"] == 2
    assert scanner.result.examples == 4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=600),
        st.sampled_from([b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"[", b"a,b\n"]).flatmap(
            lambda head: st.binary(max_size=300).map(lambda tail: head + tail)
        ),
    )
)
def test_whole_file_sniffing_and_validation_never_raise_on_any_bytes(data: bytes) -> None:
    """The whole-file checks (UTF-16, JSON array, CSV, empty) run before any line is read."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        path.write_bytes(data)
        report = validate_file(path, workers=1, settings=ValidationSettings(dedup_capacity=1 << 10))
    assert report.verdict in ("pass", "warn", "block")


def test_deeply_nested_values_in_every_position_are_findings() -> None:
    """Found beyond the issue's instances: a role, content, weight, tools or output nested
    hundreds of levels deep crashed repr(), orjson.dumps (254 levels) or ==."""
    for depth in (300, 600, 1000):  # the lines stay within orjson's 1,024 levels
        deep = "[" * depth + "]" * depth
        templates = [
            '{"messages":[{"role":DEEP,"content":"hi"}]}',
            '{"messages":[{"role":"user","content":DEEP}]}',
            '{"messages":[{"role":"assistant","content":"x","weight":DEEP}]}',
            '{"messages":[{"role":"assistant","content":"x"}],"parallel_tool_calls":DEEP}',
            '{"messages":[{"role":"assistant","content":"x"}],"tools":[{"type":"function",'
            '"function":{"name":"f","parameters":DEEP}}]}',
            '{"input":{"messages":[{"role":"user","content":"x"}]},'
            '"preferred_output":[{"role":"assistant","content":DEEP}],'
            '"non_preferred_output":[{"role":"assistant","content":DEEP}]}',
            '{"prompt":"a","completion":DEEP}',
        ]
        lines = [template.replace("DEEP", deep) for template in templates]
        scanner = ChunkScanner(CONFIG, 0, 1)
        scanner.scan_bytes("\n".join(lines).encode(), at_file_start=True)
        assert scanner.result.examples == 7, depth
        assert scanner.result.counts["unrecognized_role"] == 1
        assert scanner.result.counts["invalid_tools"] == (1 if depth > 250 else 0)
