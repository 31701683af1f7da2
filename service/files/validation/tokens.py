"""Offline token counting with the cookbook's chat rule (openai-contract.md §4.3).

Counts go straight to the ``bpe_openai`` Rust backend's ``count``: the tiktoken-compatible
wrapper adds per-call bookkeeping (timers, result objects, special-token regexes) that costs
more than encoding a short message. Special-token text such as ``<|endoftext|>`` is counted as
ordinary text, which is how the fine-tuning service sees user data.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.util
import itertools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

O200K = "o200k_base"
CL100K = "cl100k_base"

# Longest matching prefix wins. Dated snapshots are covered by their family prefix, which is
# why this table exists at all: bpe_openai's own lookup misses e.g. gpt-4o-mini-2024-07-18.
MODEL_ENCODING_PREFIXES: dict[str, str] = {
    "gpt-4o": O200K,
    "gpt-4.1": O200K,
    "gpt-4.5": O200K,
    "gpt-5": O200K,
    "chatgpt-4o": O200K,
    "o1": O200K,
    "o3": O200K,
    "o4": O200K,
    "gpt-4": CL100K,
    "gpt-3.5": CL100K,
    "babbage-002": CL100K,
    "davinci-002": CL100K,
}
DEFAULT_ENCODING = O200K

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


def base_model(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org::abc`` -> ``gpt-4o-mini-2024-07-18``."""
    if model.startswith("ft:"):
        parts = model.split(":")
        if len(parts) > 1 and parts[1]:
            return parts[1]
    return model


def encoding_for_model(model: str) -> str:
    name = base_model(model)
    best = ""
    for prefix in MODEL_ENCODING_PREFIXES:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return MODEL_ENCODING_PREFIXES[best] if best else DEFAULT_ENCODING


@functools.cache
def _bindings_module() -> Any:
    """The Rust extension alone. ``import bpe_openai`` would first run the package's
    ``__init__``, which decodes every shipped vocabulary into Python dicts: ~2.5 s and ~70 MB
    per process that the counter never uses."""
    spec = importlib.util.find_spec("bpe_openai")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = os.path.join(folder, "_bindings" + suffix)
            if os.path.exists(candidate):
                loader = importlib.machinery.ExtensionFileLoader("bpe_openai._bindings", candidate)
                module_spec = importlib.util.spec_from_file_location(
                    "bpe_openai._bindings", candidate, loader=loader
                )
                if module_spec is None:
                    continue
                module = importlib.util.module_from_spec(module_spec)
                loader.exec_module(module)
                return module
    from bpe_openai import _bindings  # layout changed: fall back to the regular import

    return _bindings


# Encodings whose pre-tokenizer splits text so that a space preceded by a non-space always
# starts a new piece (see _WordCounts); others are counted whole.
_WORD_SPLIT_ENCODINGS = frozenset({O200K, CL100K})
# A space preceded by whitespace (Python's \s is a superset of the tokenizer's): such a space
# can sit inside a whitespace piece, so a text holding one is counted whole.
_UNSAFE_SPACE = re.compile(
    "[ \t\n\x0b\x0c\r\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000] "
)
# Words cached per process: enough for a language's common words in a few MB; past it the
# cache starts over (memory stays bounded whatever the file).
WORD_CACHE_ENTRIES = 200_000
# Longer words (ids, hashes, URLs) rarely repeat: counted, not kept.
_WORD_CACHE_MAX_CHARS = 40


class _WordCounts(dict[str, int]):
    """word -> tokens of ``prefix + word``; a miss counts it with the backend."""

    def __init__(self, count: Callable[[str], int], prefix: str) -> None:
        super().__init__()
        self._count, self._prefix = count, prefix

    def __missing__(self, word: str) -> int:
        tokens = self._count(self._prefix + word)
        if len(word) <= _WORD_CACHE_MAX_CHARS:
            if len(self) >= WORD_CACHE_ENTRIES:
                self.clear()
            self[word] = tokens
        return tokens


class CachedCounter:
    """Exact token counts, each word's count looked up once per process.

    The backend spends nearly all its time in the pre-tokenizer's regex (~15 MB/s), and
    content strings rarely repeat while their words do. o200k's and cl100k's pre-tokenizer
    pieces hold a space only as their first character unless they are all whitespace, so
    every space that follows a non-whitespace character starts a piece, and the text's count
    is the sum over ``text.split(" ")`` of each word's count (with its leading space), taken
    from a dict. Texts with a space after whitespace are counted whole.
    """

    def __init__(self, encoding: str, cache_size: int = 4_096) -> None:
        self.encoding = encoding
        self._backend = _bindings_module().tokenizer_for_encoding(encoding)
        self._first_words = _WordCounts(self._count_text, "")
        self._spaced_words = _WordCounts(self._count_text, " ")
        self._batch: Any = None
        if encoding in _WORD_SPLIT_ENCODINGS:
            from service.files.validation.batch_count import BatchCounter  # numpy: scans only

            self._batch = BatchCounter(self._count_text)
        else:
            self.count_uncached = self._count_text  # type: ignore[method-assign]
        self.count: Callable[[str], int] = functools.lru_cache(maxsize=cache_size)(
            self.count_uncached
        )

    def count_uncached(self, text: str) -> int:
        """For strings that will not repeat: the cache's hashing and eviction cost more."""
        if _UNSAFE_SPACE.search(text) is not None:
            return self._count_text(text)
        words = text.split(" ")
        return self._first_words[words[0]] + sum(
            map(self._spaced_words.__getitem__, itertools.islice(words, 1, None))
        )

    def count_many(self, texts: Sequence[str]) -> Any:
        """Each text's count (a numpy int64 array), the words of all of them at once."""
        if self._batch is not None:
            return self._batch.count_many(texts)
        import numpy as np

        return np.fromiter(map(self.count_uncached, texts), np.int64, len(texts))

    def _count_text(self, text: str) -> int:
        try:
            return self._backend.count(text)
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8 encoded; count what the provider would see.
            return self._backend.count(text.encode("utf-8", "replace").decode("utf-8"))


@functools.cache
def get_counter(encoding: str, cache_size: int = 4_096) -> CachedCounter:
    """One counter per process and encoding: loading an encoding costs ~100 MB and ~0.1 s."""
    counter = CachedCounter(encoding, cache_size)
    _release_vocabulary_pages()
    return counter


_MADV_DONTNEED = 4


def _release_vocabulary_pages() -> None:
    """Drops the extension's read-only pages from this process's memory (Linux).

    The extension embeds every encoding's vocabulary (~70 MB) and reads the one it loads
    into its own structures; the pages read stay resident (~31 MB per process) although
    nothing reads them again. They are clean file pages: dropping them loses nothing, and
    a later read just faults them back in from the file. Mappings with any written
    (relocated) page are left alone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        library = os.path.realpath(_bindings_module().__file__)
        mappings: list[list] = []
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                    path = fields[5] if len(fields) > 5 else ""
                    mappings.append([fields[0], fields[1], path, 0])
                elif fields[0] in ("Private_Dirty:", "Shared_Dirty:") and mappings:
                    mappings[-1][3] += int(fields[1])
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for span, permissions, path, dirty in mappings:
            if path == library and permissions == "r--p" and dirty == 0:
                start, end = (int(bound, 16) for bound in span.split("-"))
                libc.madvise(start, end - start, _MADV_DONTNEED)
    except (OSError, ValueError, AttributeError, IndexError):
        return  # an optimisation only


def _content_text_tokens(content: Any, count: Callable[[str], int]) -> int:
    if isinstance(content, str):
        return count(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += count(part["text"])
    return total


def _function_tokens(function: Any, count: Callable[[str], int]) -> int:
    if not isinstance(function, Mapping):
        return 0
    total = 0
    for key in ("name", "arguments"):
        value = function.get(key)
        if isinstance(value, str):
            total += count(value)
    return total


def count_message_tokens(message: Mapping[str, Any], count: Callable[[str], int]) -> int:
    """The cookbook rule for one message, extended to values the cookbook would crash on.

    Every string value counts (plus one for ``name``); non-string scalars such as ``weight``
    are skipped; text parts, ``tool_calls`` and ``function_call`` count their text.
    """
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if isinstance(value, str):
            total += count(value)
            if key == "name":
                total += TOKENS_PER_NAME
        elif key == "content":
            total += _content_text_tokens(value, count)
        elif key == "tool_calls" and isinstance(value, list):
            for call in value:
                if isinstance(call, Mapping):
                    total += _function_tokens(call.get("function"), count)
        elif key == "function_call":
            total += _function_tokens(value, count)
    return total


def count_tools_tokens(tools: Any, count: Callable[[str], int]) -> int:
    """Tool schemas are part of the prompt; counted as their compact JSON (an approximation)."""
    if not tools:
        return 0
    return count(orjson.dumps(tools).decode())


def count_chat_tokens(example: Mapping[str, Any], enc: TokenCounter) -> int:
    """Tokens of one chat example: 3 per message + its values, plus 3 for reply priming."""
    count = enc.count
    total = TOKENS_REPLY_PRIMING
    messages = example.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                total += count_message_tokens(message, count)
    total += count_tools_tokens(example.get("tools"), count)
    return total


def count_assistant_tokens(messages: Any, count: Callable[[str], int]) -> int:
    total = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping) and message.get("role") == "assistant":
                total += _content_text_tokens(message.get("content"), count)
    return total
