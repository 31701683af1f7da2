"""Every finding code, its default severity and the fix to suggest. Codes are stable API."""

from __future__ import annotations

from typing import Literal, NamedTuple

# Defined here, not in settings, so worker processes never import pydantic.
Severity = Literal["error", "warning"]


class CodeInfo(NamedTuple):
    severity: Severity
    suggestion: str


E: Severity = "error"
W: Severity = "warning"

CODES: dict[str, CodeInfo] = {
    # Encoding and line structure.
    "empty_file": CodeInfo(E, "Upload a JSONL file with one training example per line."),
    "encoding_bom": CodeInfo(E, "Save the file as UTF-8 without a byte-order mark (BOM)."),
    "encoding_invalid_utf8": CodeInfo(E, "Re-encode the file as UTF-8."),
    "encoding_nul_byte": CodeInfo(E, "Remove NUL (0x00) bytes; the file may be UTF-16 or binary."),
    "encoding_utf16": CodeInfo(E, "Re-encode the file as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)."),
    "encoding_utf32": CodeInfo(E, "Re-encode the file as UTF-8 (e.g. `iconv -f UTF-32 -t UTF-8`)."),
    "json_array_file": CodeInfo(
        E, "Convert the JSON array to JSONL, one object per line (`ftq files convert`)."
    ),
    "csv_file": CodeInfo(
        E, "Convert the CSV to JSONL with prompt/completion or messages (`ftq files convert`)."
    ),
    "encoding_crlf": CodeInfo(W, "Use LF line endings (e.g. `dos2unix FILE`)."),
    "blank_line": CodeInfo(W, "Remove empty lines; every line must hold one JSON object."),
    "invalid_json": CodeInfo(E, "Fix the JSON syntax; each line must be one complete JSON object."),
    "not_an_object": CodeInfo(E, "Each line must be a JSON object ({...}), not an array or value."),
    "unknown_format": CodeInfo(
        E, 'Use chat ({"messages": [...]}), prompt/completion or DPO (input/preferred_output).'
    ),
    "mixed_formats": CodeInfo(E, "Keep one format per file; convert or remove the odd lines."),
    "unknown_key": CodeInfo(W, "Remove keys the format does not define; they are ignored at best."),
    # Format against the job's model and method (service/files/compat.py).
    "format_model_mismatch": CodeInfo(
        E, "Use a model that trains on this format, or convert the data to the model's format."
    ),
    "format_method_mismatch": CodeInfo(
        E, 'Use method "dpo" for preference data and "supervised" for chat data.'
    ),
    "converted_to_chat": CodeInfo(
        W, "Upload chat-format data (messages) to control the conversion."
    ),
    "unknown_model": CodeInfo(
        W, "Check the model name; an unknown one is validated with default encoding and prices."
    ),
    # Example counts.
    "too_few_examples": CodeInfo(E, "Provide at least the minimum number of examples (10)."),
    "few_examples": CodeInfo(W, "50-100 well-chosen examples usually give clearly better results."),
    # Chat (cookbook checks and their extensions).
    "missing_messages_list": CodeInfo(E, 'Give each example a non-empty "messages" list.'),
    "message_not_object": CodeInfo(E, 'Each message must be an object with "role" and "content".'),
    "message_missing_key": CodeInfo(E, 'Give every message a "role" and a "content".'),
    "message_unrecognized_key": CodeInfo(
        E, "Remove keys the role does not allow (e.g. weight is for assistant messages only)."
    ),
    "unrecognized_role": CodeInfo(E, "Use one of the roles system, user, assistant or tool."),
    "missing_content": CodeInfo(E, "Give the message non-empty content (or tool_calls)."),
    "invalid_content_type": CodeInfo(
        E, 'Content must be a string or a list of {"type": "text", "text": ...} parts.'
    ),
    "example_missing_assistant_message": CodeInfo(
        E, "Add at least one assistant message: it is what the model is trained to produce."
    ),
    "invalid_weight": CodeInfo(E, "Set weight to the integer 0 or 1 (or leave it out)."),
    "no_trainable_messages": CodeInfo(
        W, "Every assistant message has weight 0, so nothing is learnt from this example."
    ),
    "last_message_not_assistant": CodeInfo(
        W, "End the example with the assistant reply; trailing messages are not trained on."
    ),
    "no_system_message": CodeInfo(
        W, "Add the system prompt you will use at inference time (cookbook warning)."
    ),
    "no_user_message": CodeInfo(W, "Add a user message (cookbook warning)."),
    "invalid_tools": CodeInfo(
        E, 'tools must be a list of {"type": "function", "function": {"name": ...}}.'
    ),
    "deprecated_functions": CodeInfo(W, "Replace the deprecated functions field with tools."),
    "invalid_parallel_tool_calls": CodeInfo(E, "parallel_tool_calls must be true or false."),
    "invalid_tool_call": CodeInfo(
        E, 'Each tool call needs id, type "function" and function {name, arguments}.'
    ),
    "tool_call_arguments_not_json": CodeInfo(
        E, "function.arguments must be a string holding valid JSON."
    ),
    "tool_call_unknown_function": CodeInfo(W, "Declare the called function in the tools list."),
    "tool_call_id_mismatch": CodeInfo(
        E, "A tool message's tool_call_id must match a preceding assistant tool call's id."
    ),
    "special_token_text": CodeInfo(
        W,
        "Remove or escape special-token text such as <|endoftext|> or <|im_start|>; a local "
        "model's tokenizer turns it into control tokens that end turns mid-reply.",
    ),
    # Tokens.
    "too_long": CodeInfo(
        W, "Shorten or split the example; tokens beyond the model's context are truncated."
    ),
    # DPO.
    "dpo_invalid_input": CodeInfo(E, 'input must be an object with a non-empty "messages" list.'),
    "dpo_input_last_not_user": CodeInfo(W, "End input.messages with the user turn to answer."),
    "dpo_invalid_output": CodeInfo(
        E, "preferred_output and non_preferred_output must each be a list of one assistant message."
    ),
    "dpo_identical_outputs": CodeInfo(
        W, "Make the preferred and non-preferred outputs differ; identical pairs teach nothing."
    ),
    "dpo_legacy_field_names": CodeInfo(
        W, "Rename preferred_completion/non_preferred_completion to *_output."
    ),
    # Legacy prompt/completion (prepare_data validators).
    "missing_column": CodeInfo(E, 'Each example needs string "prompt" and "completion" fields.'),
    "invalid_field_type": CodeInfo(E, "prompt and completion must be strings."),
    "empty_completion": CodeInfo(E, "Remove examples with an empty completion."),
    "long_example": CodeInfo(W, "Keep prompt + completion under 10,000 characters."),
    "uppercase_prompts": CodeInfo(W, "Consider lowercasing prompts (over 1/3 uppercase letters)."),
    "uppercase_completions": CodeInfo(
        W, "Consider lowercasing completions (over 1/3 uppercase letters)."
    ),
    "identical_prompts": CodeInfo(E, "All prompts are identical; the model can learn nothing."),
    "identical_completions": CodeInfo(E, "All completions are identical."),
    "missing_prompt_separator": CodeInfo(
        W, "End every prompt with the same separator so the model knows where to start."
    ),
    "long_prompt_separator": CodeInfo(W, "Use a short common prompt suffix (10 chars or less)."),
    "separator_inside_prompt": CodeInfo(
        W, "The prompt separator also occurs inside prompts; pick one that doesn't."
    ),
    "common_prompt_prefix": CodeInfo(
        W, "Remove the long prefix shared by every prompt; fine-tuning doesn't need it."
    ),
    "common_completion_prefix": CodeInfo(W, "Remove the prefix shared by every completion."),
    "missing_completion_ending": CodeInfo(
        W, "End every completion with the same stop sequence and pass it as stop= later."
    ),
    "completion_no_leading_space": CodeInfo(
        W, "Start each completion with a space (it tokenizes better for legacy models)."
    ),
    # Duplicates and leakage.
    "exact_duplicate": CodeInfo(W, "Remove the repeated example; duplicates overweight it."),
    "near_duplicate": CodeInfo(
        W, "The example differs from an earlier one only in case, spacing or punctuation."
    ),
    "train_validation_leak": CodeInfo(
        W, "Remove the example from one of the files; shared examples inflate validation scores."
    ),
    "dedup_partial": CodeInfo(
        W, "Duplicate detection ran out of table space; raise dedup_capacity for this file."
    ),
    # PII (severities configurable).
    "pii_email": CodeInfo(W, "Remove or pseudonymise e-mail addresses."),
    "pii_phone": CodeInfo(W, "Remove or pseudonymise phone numbers."),
    "pii_card_number": CodeInfo(E, "Remove payment card numbers."),
    "pii_api_key": CodeInfo(E, "Remove the secret and rotate it; it has been exposed."),
    # Moderation screening.
    "moderation_flagged": CodeInfo(
        W, "Review or remove the example; flagged data can get the training file blocked."
    ),
    "moderation_unavailable": CodeInfo(
        W, "Review a sample (GET /v1/files/{id}/sample) or re-upload to screen again."
    ),
    "moderation_block": CodeInfo(
        E, "Too many examples were flagged by moderation; clean the data before training."
    ),
}
