"""Turn an OpenAI-format JSONL file into token ids and loss labels.

Two formats, detected per line:
- chat: ``{"messages": [...]}`` rendered with the model's own chat template; only assistant
  tokens are trained (labels of everything else are -100), and an assistant message with
  ``"weight": 0`` is not trained either;
- prompt/completion: ``{"prompt": ..., "completion": ...}`` as raw text; the completion plus
  eos is trained, the prompt is not.
Examples are truncated to ``max_seq_len`` tokens; one left with nothing to train is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100


class DatasetError(ValueError):
    """The training or validation file cannot be used (bad line, unsupported template...)."""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class Dataset:
    examples: list[Example]
    n_dropped: int  # lines with nothing left to train after masking/truncation

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def n_tokens(self) -> int:
        return sum(e.n_tokens for e in self.examples)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path.name}:{line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise DatasetError(f"{path.name}:{line_no}: expected a JSON object")
            yield line_no, record


def load_dataset(path: Path, tokenizer: Any, max_seq_len: int) -> Dataset:
    """Tokenize every example in ``path``; raise DatasetError if none is usable."""
    examples: list[Example] = []
    dropped = 0
    for line_no, record in read_jsonl(path):
        try:
            example = encode_record(record, tokenizer, max_seq_len)
        except DatasetError as exc:
            raise DatasetError(f"{path.name}:{line_no}: {exc}") from exc
        if example.n_trained_tokens == 0:
            dropped += 1
        else:
            examples.append(example)
    if not examples:
        raise DatasetError(f"{path.name}: no example has any token to train on")
    return Dataset(examples=examples, n_dropped=dropped)


def encode_record(record: dict[str, Any], tokenizer: Any, max_seq_len: int) -> Example:
    if "messages" in record:
        example = encode_chat(record["messages"], tokenizer)
    elif "prompt" in record and "completion" in record:
        example = encode_prompt_completion(record["prompt"], record["completion"], tokenizer)
    else:
        raise DatasetError("expected 'messages' or 'prompt' and 'completion'")
    return Example(example.input_ids[:max_seq_len], example.labels[:max_seq_len])


def encode_prompt_completion(prompt: Any, completion: Any, tokenizer: Any) -> Example:
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DatasetError("'prompt' and 'completion' must be strings")
    prompt_ids = _encode(tokenizer, prompt)
    completion_ids = _encode(tokenizer, completion)
    if tokenizer.eos_token_id is not None:
        completion_ids.append(tokenizer.eos_token_id)
    return Example(
        input_ids=prompt_ids + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids,
    )


def encode_chat(messages: Any, tokenizer: Any) -> Example:
    """Render with the chat template and label only trainable assistant spans.

    Spans are found in the rendered text, then mapped to tokens by character offsets, which
    keeps the token ids exactly what the template renders (no per-message re-tokenization).
    """
    _validate_messages(messages)
    if not getattr(tokenizer, "chat_template", None):
        raise DatasetError("the base model's tokenizer has no chat template")
    text = _render(tokenizer, messages, add_generation_prompt=False)
    spans = _assistant_spans(tokenizer, messages, text)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, (start, end) in enumerate(encoding["offset_mapping"]):
        if end > start and any(s <= start < e for s, e in spans):
            labels[i] = input_ids[i]
    return Example(input_ids=input_ids, labels=labels)


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise DatasetError("'messages' must be a non-empty list")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise DatasetError("each message needs a string 'role'")
        message_text(message.get("content"))  # raises on unsupported content
        if message.get("weight", 1) not in (0, 1):
            raise DatasetError("an assistant 'weight' must be 0 or 1")
    if not any(m["role"] == "assistant" for m in messages):
        raise DatasetError("no assistant message to train on")


def message_text(content: Any) -> str:
    """A message's text: a string, OpenAI text parts joined, or "" for none (e.g. an
    assistant turn that only calls tools). Images and audio cannot train a text model."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise DatasetError("only text message content is supported by the local provider")


def _render(tokenizer: Any, messages: Sequence[dict], *, add_generation_prompt: bool) -> str:
    clean = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]
    if not clean:
        return ""
    return tokenizer.apply_chat_template(
        clean, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _assistant_spans(tokenizer: Any, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans of trainable assistant turns: content plus the template's closing text
    (e.g. the end-of-turn token, so the model learns to stop)."""
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        if not message_text(message.get("content")):
            continue  # e.g. a tool-call-only turn: nothing a text model should learn to say
        start_text = _render(tokenizer, messages[:i], add_generation_prompt=True)
        end_text = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (text.startswith(start_text) and text.startswith(end_text)):
            spans.append(
                _span_by_search(text, message_text(message.get("content")), tokenizer, spans)
            )
            continue
        spans.append((len(start_text), len(end_text)))
    return spans


def _span_by_search(
    text: str, content: str, tokenizer: Any, earlier: Iterable[tuple[int, int]]
) -> tuple[int, int]:
    """Fallback for templates whose rendering of a prefix is not a prefix of the whole (some
    rewrite earlier turns): locate the content itself after the previous span."""
    cursor = max((end for _, end in earlier), default=0)
    start = text.find(content, cursor) if content else -1
    if start < 0:
        raise DatasetError("cannot locate an assistant message in the rendered chat template")
    end = start + len(content)
    eos = tokenizer.eos_token
    if eos and text.startswith(eos, end):
        end += len(eos)
    return start, end


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def collate(examples: list[Example], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    import torch

    width = max(e.n_tokens for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = example.n_tokens
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids.to(device),
        "labels": labels.to(device),
        "attention_mask": attention_mask.to(device),
    }
