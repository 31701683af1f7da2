"""Special-token text in training data: which strings count, and finding them cheaply.

Rule: text that a tokenizer turns into a control token (``<|endoftext|>``, ``<|im_start|>``,
a local base model's ``<s>`` or ``<|eot_id|>``) must not appear inside an example's content.
OpenAI's service treats it as text, but a local tokenizer matches added tokens anywhere in
the string, so one stray ``<|im_end|>`` ends a turn in the middle of a reply. Every
``<|name|>`` is flagged (the shape all OpenAI and most open-weight special tokens share), plus
the exact special tokens of the local base model a file is validated for.

Nothing here imports transformers: a local model's tokens are read from its tokenizer files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# The OpenAI tokenizers' special tokens (tiktoken's cl100k/o200k plus the ChatML markers).
OPENAI_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|endofprompt|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
)
# The shared shape of those and of most open-weight models' tokens (Llama 3, Qwen, Phi).
_PIPE_TOKEN = rb"<\|[A-Za-z0-9_.:\-]{1,64}\|>"
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")
_MAX_TOKEN_CHARS = 64


def special_token_pattern(extra: Iterable[str] = ()) -> re.Pattern[bytes]:
    """One byte regex for ``<|…|>`` and every extra token (matched on UTF-8 text)."""
    literals = sorted(
        {token.encode("utf-8") for token in extra if token and not _is_pipe_token(token)},
        key=len,
        reverse=True,
    )
    parts = [_PIPE_TOKEN, *(re.escape(literal) for literal in literals)]
    return re.compile(b"|".join(parts))


def _is_pipe_token(token: str) -> bool:
    return re.fullmatch(_PIPE_TOKEN, token.encode("utf-8")) is not None


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _tokens_in_document(name: str, document: Any) -> set[str]:
    found: set[str] = set()
    if not isinstance(document, Mapping):
        return found
    if name == "tokenizer.json":
        for entry in document.get("added_tokens") or []:
            if isinstance(entry, Mapping) and entry.get("special") and entry.get("content"):
                found.add(str(entry["content"]))
        return found
    decoder = document.get("added_tokens_decoder")
    if isinstance(decoder, Mapping):
        for entry in decoder.values():
            if isinstance(entry, Mapping) and entry.get("special"):
                text = _token_text(entry)
                if text:
                    found.add(text)
    for key, value in document.items():
        if key.endswith("_token"):
            text = _token_text(value)
            if text:
                found.add(text)
        elif key == "additional_special_tokens" and isinstance(value, list):
            found.update(text for item in value if (text := _token_text(item)))
    return found


def tokens_from_tokenizer_dir(folder: Path) -> tuple[str, ...]:
    """The special tokens a Hugging Face tokenizer folder declares (unreadable files skipped)."""
    found: set[str] = set()
    for name in _TOKENIZER_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found |= _tokens_in_document(name, document)
    # Whitespace-only or absurdly long "tokens" would flag ordinary text or nothing useful.
    return tuple(sorted(t for t in found if t.strip() and len(t) <= _MAX_TOKEN_CHARS))


def _hub_snapshot(repo_id: str, cache_dir: Path | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # the train extra is not installed: no cached tokenizers either
        return None
    try:
        cached = try_to_load_from_cache(
            repo_id, "tokenizer_config.json", cache_dir=str(cache_dir) if cache_dir else None
        )
    except ValueError:  # HFValidationError: a missing local path is no hub id either
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def local_model_special_tokens(
    model: str, allowed_base_models: Mapping[str, str], cache_dir: Path | None = None
) -> tuple[str, ...]:
    """Special tokens of an allow-listed local base model, or () for any other model.

    A hub id is looked up in the local cache only: validation never downloads a model.
    """
    source = allowed_base_models.get(model)
    if not source:
        return ()
    folder = Path(source).expanduser()
    if not folder.is_dir():
        snapshot = _hub_snapshot(source, cache_dir)
        if snapshot is None:
            return ()
        folder = snapshot
    return tokens_from_tokenizer_dir(folder)


def configured_special_tokens(model: str) -> tuple[str, ...]:
    """``local_model_special_tokens`` for the deployment's local allow-list (settings.local);
    () when no deployment is configured (the offline CLI)."""
    try:
        from service.config import get_settings

        local = get_settings().local
    except Exception:  # the offline CLI must work without a configured deployment
        return ()
    return local_model_special_tokens(model, local.allowed_base_models, local.models_dir)
