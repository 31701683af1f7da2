"""The three training-file formats and the keys each one allows (openai-contract.md §4.1)."""

from __future__ import annotations

from typing import Any

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"
DPO = "dpo"
UNKNOWN = "unknown"
FORMATS = (CHAT, PROMPT_COMPLETION, DPO, UNKNOWN)
FORMAT_CODES = {name: index for index, name in enumerate(FORMATS)}

CHAT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
PROMPT_COMPLETION_KEYS = frozenset({"prompt", "completion"})
DPO_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
# The older spec's names for the DPO outputs; accepted and normalised to *_output.
DPO_LEGACY_OUTPUT_KEYS = {
    "preferred_completion": "preferred_output",
    "non_preferred_completion": "non_preferred_output",
}
DPO_INPUT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})

# Keys each role may carry in fine-tuning data. The cookbook allowed only
# role/content/name/function_call/weight and so flagged tool-calling data (cookbook #765).
MESSAGE_KEYS_BY_ROLE: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "weight", "tool_calls", "function_call", "refusal"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),  # deprecated, still accepted
}
CONTENT_PART_TYPES_BY_ROLE: dict[str, frozenset[str]] = {
    "user": frozenset({"text", "image_url"}),
}
DEFAULT_CONTENT_PART_TYPES = frozenset({"text"})

# Keys that betray a neighbouring ecosystem's format, with the hint to give.
FOREIGN_FORMAT_HINTS: dict[str, str] = {
    "instruction": "This looks like Alpaca data (instruction/input/output); convert it to "
    '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}.',
    "conversations": "This looks like ShareGPT data (conversations/from/value); rename "
    "conversations->messages, from->role (human->user, gpt->assistant), value->content.",
    "text": "Raw text lines are not a fine-tuning format; wrap each as a chat example with "
    "user and assistant messages.",
    "chosen": "This looks like TRL preference data (chosen/rejected); use input, "
    "preferred_output and non_preferred_output.",
}


def detect_format(example: dict[str, Any]) -> str:
    if "messages" in example:
        return CHAT
    if "input" in example and (
        "preferred_output" in example
        or "non_preferred_output" in example
        or "preferred_completion" in example
        or "non_preferred_completion" in example
    ):
        return DPO
    if any(key.lower() in PROMPT_COMPLETION_KEYS for key in example):
        return PROMPT_COMPLETION
    return UNKNOWN
