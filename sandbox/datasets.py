"""Parsing of fine-tuning JSONL files into examples the fake model can answer from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

ExampleFormat = Literal["chat", "completion", "preference"]

_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_COMPLETION_MODELS = frozenset({"babbage-002", "davinci-002"})


@dataclass(frozen=True)
class Example:
    format: ExampleFormat
    prompt: str  # the last user message (or prompt) the answer responds to
    answer: str
    tokens: int


@dataclass(frozen=True)
class Dataset:
    examples: tuple[Example, ...]

    @property
    def tokens(self) -> int:
        return sum(example.tokens for example in self.examples)

    @property
    def format(self) -> ExampleFormat | None:
        return self.examples[0].format if self.examples else None


class DataError(Exception):
    """A file the fine-tuning validator rejects; ``message`` is shown on the job."""


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string or a list of ``{type: "text", text}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _messages_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(estimate_tokens(content_text(m.get("content"))) for m in messages)


def _check_messages(messages: Any, where: str, *, need_assistant: bool) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of messages.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: message {index} is not a JSON object.")
        role = message.get("role")
        if role not in _CHAT_ROLES:
            raise DataError(f"{where}: message {index} has an unrecognized role {role!r}.")
        content = message.get("content")
        has_calls = bool(message.get("tool_calls") or message.get("function_call"))
        if not content_text(content) and not has_calls:
            raise DataError(f"{where}: message {index} ({role}) is missing 'content'.")
        weight = message.get("weight")
        if weight is not None and (role != "assistant" or weight not in (0, 1)):
            raise DataError(
                f"{where}: message {index} has an invalid 'weight'; only assistant messages may "
                "set it, to 0 or 1."
            )
    if need_assistant and not any(m.get("role") == "assistant" for m in messages):
        raise DataError(f"{where}: the example has no assistant message.")
    return messages


def _parse_chat(obj: dict[str, Any], where: str) -> Example:
    messages = _check_messages(obj.get("messages"), where, need_assistant=True)
    last_assistant = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return Example(
        format="chat",
        prompt=last_user_text(messages[:last_assistant]),
        answer=content_text(messages[last_assistant].get("content")),
        tokens=_messages_tokens(messages),
    )


def _parse_completion(obj: dict[str, Any], where: str) -> Example:
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DataError(f"{where}: 'prompt' and 'completion' must both be strings.")
    if not completion:
        raise DataError(f"{where}: 'completion' is empty.")
    return Example(
        format="completion",
        prompt=prompt,
        answer=completion,
        tokens=estimate_tokens(prompt) + estimate_tokens(completion),
    )


def _parse_preference(obj: dict[str, Any], where: str) -> Example:
    source = obj.get("input")
    if not isinstance(source, dict):
        raise DataError(f"{where}: 'input' must be an object with 'messages'.")
    messages = _check_messages(source.get("messages"), where, need_assistant=False)
    outputs = []
    # The older spec named these *_completion; the DPO guide uses *_output.
    for name in ("preferred", "non_preferred"):
        output = obj.get(f"{name}_output", obj.get(f"{name}_completion"))
        if not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict):
            raise DataError(f"{where}: '{name}_output' must be a list with one assistant message.")
        if output[0].get("role") != "assistant" or not content_text(output[0].get("content")):
            raise DataError(
                f"{where}: '{name}_output' must hold an assistant message with content."
            )
        outputs.append(content_text(output[0]["content"]))
    return Example(
        format="preference",
        prompt=last_user_text(messages),
        answer=outputs[0],
        tokens=_messages_tokens(messages) + sum(estimate_tokens(o) for o in outputs),
    )


def _parse_line(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    if "messages" in obj:
        return _parse_chat(obj, where)
    if "prompt" in obj or "completion" in obj:
        return _parse_completion(obj, where)
    if "input" in obj:
        return _parse_preference(obj, where)
    raise DataError(
        f"{where}: unrecognized example format; expected 'messages', 'prompt'/'completion' "
        "or 'input'/'preferred_output'/'non_preferred_output'."
    )


def parse_dataset(
    content: bytes,
    *,
    label: str,
    method: str,
    base_model: str,
    min_examples: int,
) -> Dataset:
    """Parse and validate a JSONL file the way the fine-tuning validator would.

    ``label`` names the file in messages ("Training file", "Validation file").
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{label} is not valid UTF-8 (byte {exc.start}).") from exc
    examples: list[Example] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{label}, line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}).") from exc
        example = _parse_line(obj, where)
        if examples and example.format != examples[0].format:
            raise DataError(
                f"{where}: example format {example.format!r} differs from the file's first "
                f"example ({examples[0].format!r}); do not mix formats."
            )
        _check_method(example, method, base_model, where)
        examples.append(example)
    if len(examples) < min_examples:
        raise DataError(
            f"{label} has {len(examples)} example(s), but must have at least "
            f"{min_examples} examples."
        )
    return Dataset(tuple(examples))


def _check_method(example: Example, method: str, base_model: str, where: str) -> None:
    if method == "dpo" and example.format != "preference":
        raise DataError(
            f"{where}: DPO jobs need 'input'/'preferred_output'/'non_preferred_output'."
        )
    if method != "dpo" and example.format == "preference":
        raise DataError(f"{where}: preference examples are only valid for method type 'dpo'.")
    completion_model = base_model in _COMPLETION_MODELS
    if completion_model and example.format != "completion":
        raise DataError(f"{where}: {base_model} needs 'prompt'/'completion' examples.")
    if not completion_model and example.format == "completion":
        raise DataError(
            f"{where}: 'prompt'/'completion' examples are only valid for babbage-002 and "
            f"davinci-002; {base_model} needs chat 'messages'."
        )
