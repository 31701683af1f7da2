"""The scanner must turn any input into findings, never into an exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.files.validation.checks import ChunkScanner, ScanConfig

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

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
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
