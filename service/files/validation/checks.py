"""Per-line and per-example checks over one byte range of a JSONL file.

``scan_chunk`` is what each worker process runs. It returns a ``ChunkResult`` of mergeable
partial aggregates; line numbers in it are local to the chunk and get shifted by the parent.
Memory per call is bounded by the chunk size, never by the file size.
"""

from __future__ import annotations

import re
import reprlib
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.files.validation import formats as fmt
from service.files.validation.codes import CODES
from service.files.validation.dedup import digest, hash64, near_digest
from service.files.validation.pii import find_pii
from service.files.validation.special_tokens import special_token_pattern
from service.files.validation.tokens import (
    TOKENS_PER_MESSAGE,
    count_assistant_tokens,
    count_message_tokens,
    count_tools_tokens,
    get_counter,
)

BOM = b"\xef\xbb\xbf"
# Candidate prompt separators and completion endings, in prepare_data's order.
PROMPT_SEPARATORS = (
    " ->",
    "\n\n###\n\n",
    "\n\n===\n\n",
    "\n\n---\n\n",
    "\n\n===>\n\n",
    "\n\n--->\n\n",
)
PROMPT_SEPARATOR_FALLBACK = "\n\n### =>\n\n"
COMPLETION_ENDINGS = ("\n", ".", " END", "***", "+++", "&&&", "$$$", "@@@", "%%%")
COMPLETION_ENDING_FALLBACK = " [END]"
_PLAIN_ROLES = frozenset({"system", "user", "assistant"})
# Values shown in messages are cut here: a "role" can be any JSON value, however large or
# deep (orjson accepts 1,024 levels; repr() recurses and would raise long before).
_SHOWN_CHARS = 60
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, _SHOWN_CHARS, _SHOWN_CHARS


def _shown(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except RecursionError:  # hundreds of levels deep: not a real output, and not identical
        return False


# Prompt/completion texts joined per pass by LegacyStats.flush: fewer passes cost more memory
# (a joined string holds up to 4 bytes per character).
LEGACY_FLUSH_EVERY = 512
# Characters of deferred content counted per batch: few enough to keep a chunk's texts from
# piling up (up to 4 bytes per character), many enough for numpy to pay off.
DEFERRED_CHARS = 256 * 1024
# Distinct completions remembered for the classification heuristic (unique < n/3).
MAX_DISTINCT_COMPLETIONS = 50_000


@dataclass(frozen=True)
class ScanConfig:
    encoding: str
    context_limit: int
    findings_cap: int
    pii_enabled: bool
    pii_severity: Mapping[str, str]
    near_min_chars: int
    legacy_long_chars: int
    token_cache_size: int
    # Exact special tokens of a local base model, flagged beside every ``<|name|>``.
    special_tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkTask:
    path: str
    start: int
    end: int
    config: ScanConfig


@dataclass
class LegacyStats:
    """Mergeable aggregates for prepare_data's whole-file prompt/completion checks."""

    n: int = 0
    all_prompts_empty: bool = True
    first_prompt: str | None = None
    prompts_differ: bool = False
    first_completion: str | None = None
    completions_differ: bool = False
    prompt_prefix: str | None = None
    prompt_suffix: str | None = None
    completion_prefix: str | None = None
    completion_suffix: str | None = None
    newline_in_prompt: bool = False
    separators_seen: set[str] = field(default_factory=set)
    endings_seen: set[str] = field(default_factory=set)
    prompt_upper: int = 0
    prompt_lower: int = 0
    completion_upper: int = 0
    completion_lower: int = 0
    completions_without_space: int = 0
    first_line_without_space: int | None = None
    distinct_completions: set[int] = field(default_factory=set)
    distinct_overflow: bool = False
    # Texts whose additive aggregates (letter cases, separators seen) are taken in one pass
    # per chunk by flush(): the same totals without per-example Python work.
    pending_prompts: list[str] = field(default_factory=list)
    pending_completions: list[str] = field(default_factory=list)

    def add(self, line: int, prompt: str, completion: str) -> None:
        self.n += 1
        if prompt:
            self.all_prompts_empty = False
        if self.first_prompt is None:
            self.first_prompt, self.first_completion = prompt, completion
        else:
            self.prompts_differ = self.prompts_differ or prompt != self.first_prompt
            self.completions_differ = self.completions_differ or completion != self.first_completion
        self.prompt_prefix = _common_prefix(self.prompt_prefix, prompt)
        self.prompt_suffix = _common_suffix(self.prompt_suffix, prompt)
        self.completion_prefix = _common_prefix(self.completion_prefix, completion)
        self.completion_suffix = _common_suffix(self.completion_suffix, completion)
        self.pending_prompts.append(prompt)
        self.pending_completions.append(completion)
        if len(self.pending_prompts) >= LEGACY_FLUSH_EVERY:
            self.flush()
        if completion and not completion[0].isspace():
            self.completions_without_space += 1
            if self.first_line_without_space is None:
                self.first_line_without_space = line
        if not self.distinct_overflow:
            self.distinct_completions.add(hash64(completion.encode("utf-8", "replace")))
            if len(self.distinct_completions) > MAX_DISTINCT_COMPLETIONS:
                self.distinct_overflow = True
                self.distinct_completions.clear()

    def flush(self) -> None:
        """Adds the pending texts' letter cases, separators and endings. Joined with NUL,
        which no separator or ending contains and which is no letter, the totals are exactly
        those of the texts one by one."""
        if not self.pending_prompts:
            return
        prompts = "\x00".join(self.pending_prompts)
        completions = "\x00".join(self.pending_completions)
        self.pending_prompts, self.pending_completions = [], []
        if "\n" in prompts:
            self.newline_in_prompt = True
        for separator in PROMPT_SEPARATORS:
            if separator not in self.separators_seen and separator in prompts:
                self.separators_seen.add(separator)
        for ending in COMPLETION_ENDINGS:
            if ending not in self.endings_seen and ending in completions:
                self.endings_seen.add(ending)
        upper, lower = _letter_cases(prompts)
        self.prompt_upper += upper
        self.prompt_lower += lower
        upper, lower = _letter_cases(completions)
        self.completion_upper += upper
        self.completion_lower += lower

    def merge(self, other: LegacyStats, line_offset: int) -> None:
        other.flush()
        if other.n == 0:
            return
        if self.n == 0:
            self.__dict__.update(other.__dict__)
            if self.first_line_without_space is not None:
                self.first_line_without_space += line_offset
            return
        self.n += other.n
        self.all_prompts_empty = self.all_prompts_empty and other.all_prompts_empty
        self.prompts_differ = (
            self.prompts_differ or other.prompts_differ or self.first_prompt != other.first_prompt
        )
        self.completions_differ = (
            self.completions_differ
            or other.completions_differ
            or self.first_completion != other.first_completion
        )
        self.prompt_prefix = _common_prefix(self.prompt_prefix, other.prompt_prefix)
        self.prompt_suffix = _common_suffix(self.prompt_suffix, other.prompt_suffix)
        self.completion_prefix = _common_prefix(self.completion_prefix, other.completion_prefix)
        self.completion_suffix = _common_suffix(self.completion_suffix, other.completion_suffix)
        self.newline_in_prompt = self.newline_in_prompt or other.newline_in_prompt
        self.separators_seen |= other.separators_seen
        self.endings_seen |= other.endings_seen
        self.prompt_upper += other.prompt_upper
        self.prompt_lower += other.prompt_lower
        self.completion_upper += other.completion_upper
        self.completion_lower += other.completion_lower
        self.completions_without_space += other.completions_without_space
        if self.first_line_without_space is None and other.first_line_without_space is not None:
            self.first_line_without_space = other.first_line_without_space + line_offset
        if self.distinct_overflow or other.distinct_overflow:
            self.distinct_overflow = True
            self.distinct_completions.clear()
        else:
            self.distinct_completions |= other.distinct_completions
            if len(self.distinct_completions) > MAX_DISTINCT_COMPLETIONS:
                self.distinct_overflow = True
                self.distinct_completions.clear()


def _shared_prefix(a: str, b: str) -> str:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return a[:index]


def _common_prefix(current: str | None, text: str | None) -> str | None:
    if current is None:
        return text
    if text is None or text.startswith(current):  # the usual case once the prefix settled
        return current
    return _shared_prefix(current, text)


def _common_suffix(current: str | None, text: str | None) -> str | None:
    if current is None:
        return text
    if text is None or text.endswith(current):
        return current
    return _shared_prefix(current[::-1], text[::-1])[::-1]


# Deleting every byte but A-Z (a-z) leaves the count of upper (lower) case ASCII letters in
# one C pass; str.isupper per character in a generator cost ~100 us per example.
_NOT_UPPER = bytes(b for b in range(256) if not 65 <= b <= 90)
_NOT_LOWER = bytes(b for b in range(256) if not 97 <= b <= 122)


_ASCII_RUN = re.compile(r"[\x00-\x7f]+")


def _letter_cases(text: str) -> tuple[int, int]:
    """(uppercase letters, lowercase letters), as prepare_data counted them (str.isupper):
    ASCII letters by byte deletion, the few other characters one by one."""
    encoded = text.encode("utf-8", "surrogatepass")  # non-ASCII bytes are never A-Z/a-z
    upper = len(encoded.translate(None, _NOT_UPPER))
    lower = len(encoded.translate(None, _NOT_LOWER))
    if not text.isascii():
        other = _ASCII_RUN.sub("", text)
        upper += sum(map(str.isupper, other))
        lower += sum(map(str.islower, other))
    return upper, lower


@dataclass
class RawFinding:
    line: int | None
    code: str
    message: str
    suggestion: str | None = None


@dataclass
class ChunkResult:
    start: int
    end: int
    lines: int = 0
    examples: int = 0
    formats: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    findings: list[RawFinding] = field(default_factory=list)
    tokens_hist: Counter[int] = field(default_factory=Counter)
    assistant_hist: Counter[int] = field(default_factory=Counter)
    messages_hist: Counter[int] = field(default_factory=Counter)
    legacy: LegacyStats = field(default_factory=LegacyStats)
    # Per example: local line, exact hash, near hash, format code (flat 'Q' array).
    records: bytes = b""


class ChunkScanner:
    """Checks lines one at a time; one instance per chunk."""

    def __init__(self, config: ScanConfig, start: int, end: int) -> None:
        self.config = config
        self.result = ChunkResult(start=start, end=end)
        counter = get_counter(config.encoding, config.token_cache_size)
        # LRU-cached, for strings that repeat (system prompts, roles, tool schemas); other
        # contents are deferred and counted a batch at a time (_defer, batch_count.py).
        self._count = counter.count
        self._count_many = counter.count_many
        self._role_tokens = {
            role: TOKENS_PER_MESSAGE + counter.count(role) for role in _PLAIN_ROLES
        }
        # Per example, turned into histograms once per chunk (Counter.update is one C loop).
        self._tokens = array("I")
        self._assistant = array("I")
        self._n_messages = array("I")
        self._token_lines = array("I")
        # Content that rarely repeats (user and assistant messages, prompts, completions) is
        # counted per chunk in one batch (batch_count.py): the text, the index of its example
        # in _tokens, and whether it counts as assistant (output) tokens.
        self._deferred: list[str] = []
        self._deferred_owner = array("I")
        self._deferred_assistant = array("B")
        self._deferred_chars = 0
        # Counts of batches already made, per example (numpy arrays, grown as needed).
        self._counted: Any = None
        self._counted_assistant: Any = None
        # Per example: line and format code, and the exact and near-duplicate hashes as
        # 8-byte digests (no int per example); records() lays them out for the parent.
        self._record_lines = array("Q")
        self._record_formats = array("Q")
        self._exact_digests = bytearray()
        self._near_digests = bytearray()
        self._cap = config.findings_cap
        self._assistant_tokens = 0
        self._special_tokens = special_token_pattern(config.special_tokens)
        # A substring test rules out nearly every example before the regex runs; a local
        # model's own tokens ("<s>", "[INST]") have no common marker, so they always search.
        self._always_search_special = bool(config.special_tokens)

    def emit(
        self, line: int | None, code: str, message: str, suggestion: str | None = None
    ) -> None:
        counts = self.result.counts
        counts[code] += 1
        if counts[code] <= self._cap:
            self.result.findings.append(RawFinding(line, code, message, suggestion))

    # -- lines -------------------------------------------------------------------------------

    def scan_bytes(self, data: bytes, at_file_start: bool) -> None:
        if at_file_start and data.startswith(BOM):
            self.emit(1, "encoding_bom", "The file starts with a UTF-8 byte-order mark.")
            data = data[len(BOM) :]
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the newline that ends the last line is not a blank line
        self.result.lines = len(lines)
        has_nul = b"\x00" in data
        has_cr = b"\r" in data
        for index, raw in enumerate(lines, start=1):
            if has_cr and raw.endswith(b"\r"):
                self.emit(index, "encoding_crlf", "The line ends with CRLF.")
                raw = raw[:-1]
            if has_nul and b"\x00" in raw:
                self.emit(index, "encoding_nul_byte", "The line contains NUL (0x00) bytes.")
                continue
            self.scan_line(index, raw)
        self.result.records = self._records()
        self.result.legacy.flush()
        self._finish_tokens()
        self.result.messages_hist.update(self._n_messages)

    def _records(self) -> bytes:
        """(line, exact hash, near hash, format code) per example, as a flat 'Q' array."""
        import numpy as np

        records = np.empty((len(self._record_lines), 4), dtype=np.uint64)
        records[:, 0] = self._record_lines
        exact = np.frombuffer(self._exact_digests, dtype="<u8")
        records[:, 1] = np.where(exact == 0, 1, exact)  # as hash64: 0 means "none"
        records[:, 2] = np.frombuffer(self._near_digests, dtype="<u8")
        records[:, 3] = self._record_formats
        return records.tobytes()

    def _finish_tokens(self) -> None:
        """Adds the deferred counts to their examples; flags the examples over the limit."""
        import numpy as np

        self._count_deferred()
        tokens = np.array(self._tokens, dtype=np.int64)
        assistant = np.array(self._assistant, dtype=np.int64)
        if self._counted is not None:
            tokens[: len(self._counted)] += self._counted
            assistant[: len(self._counted)] += self._counted_assistant
        limit = self.config.context_limit
        for index in np.flatnonzero(tokens > limit).tolist():
            self.emit(
                self._token_lines[index],
                "too_long",
                f"{tokens[index]} tokens; the model trains on at most {limit}, "
                "the rest is truncated.",
            )
        self.result.tokens_hist.update(tokens.tolist())
        self.result.assistant_hist.update(assistant.tolist())

    def _defer(self, text: str, assistant: bool) -> None:
        self._deferred.append(text)
        self._deferred_owner.append(len(self._tokens))
        self._deferred_assistant.append(assistant)
        self._deferred_chars += len(text)
        if self._deferred_chars >= DEFERRED_CHARS:
            self._count_deferred()

    def _count_deferred(self) -> None:
        """Counts the deferred texts in one batch and adds them up per example."""
        if not self._deferred:
            return
        import numpy as np

        counts = self._count_many(self._deferred)
        owner = np.array(self._deferred_owner, dtype=np.intp)
        output = np.array(self._deferred_assistant, dtype=bool)
        # Emptied in place: _check_messages appends to these lists through local names.
        self._deferred.clear()
        del self._deferred_owner[:]
        del self._deferred_assistant[:]
        self._deferred_chars = 0
        size = int(owner[-1]) + 1  # owners only grow; the last may be the current example
        # Float sums of integers below 2**53 are exact.
        tokens = np.bincount(owner, counts, size).astype(np.int64)
        assistant = np.bincount(owner[output], counts[output], size).astype(np.int64)
        if self._counted is None:
            self._counted, self._counted_assistant = tokens, assistant
            return
        if len(self._counted) < size:
            grow = np.zeros(size - len(self._counted), np.int64)
            self._counted = np.concatenate((self._counted, grow))
            self._counted_assistant = np.concatenate((self._counted_assistant, grow))
        self._counted[:size] += tokens
        self._counted_assistant[:size] += assistant

    def scan_line(self, line: int, raw: bytes) -> None:
        try:
            example = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._diagnose_unparsable(line, raw, exc)
            return
        if type(example) is not dict:
            self.emit(
                line,
                "not_an_object",
                f"The line is a JSON {type(example).__name__}, not an object.",
            )
            return
        self.scan_example(line, example, raw)

    def _diagnose_unparsable(self, line: int, raw: bytes, exc: Exception) -> None:
        if not raw.strip():
            self.emit(line, "blank_line", "The line is empty.")
            return
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as decode_error:
            self.emit(
                line,
                "encoding_invalid_utf8",
                f"Invalid UTF-8 at byte {decode_error.start} of the line.",
            )
            return
        self.emit(line, "invalid_json", f"Not valid JSON: {str(exc)[:120]}")

    # -- examples ----------------------------------------------------------------------------

    def scan_example(self, line: int, example: dict[str, Any], raw: bytes) -> None:
        result = self.result
        result.examples += 1
        kind = fmt.detect_format(example)
        result.formats[kind] += 1
        texts: list[str] = []
        if kind == fmt.CHAT:
            tokens, assistant_tokens, n_messages = self._check_chat(line, example, texts)
        elif kind == fmt.DPO:
            tokens, assistant_tokens, n_messages = self._check_dpo(line, example, texts)
        elif kind == fmt.PROMPT_COMPLETION:
            tokens, assistant_tokens, n_messages = self._check_prompt_completion(
                line, example, texts
            )
        else:
            self._check_unknown(line, example)
            tokens = assistant_tokens = n_messages = 0
        if kind != fmt.UNKNOWN:
            # Deferred counts are added by _finish_tokens, which also flags too_long.
            self._tokens.append(tokens)
            self._assistant.append(assistant_tokens)
            self._n_messages.append(n_messages)
            self._token_lines.append(line)
        text = "\n".join(texts)
        encoded = text.encode("utf-8", "surrogatepass")
        if self.config.pii_enabled and text:
            for code, redacted in find_pii(text, encoded):
                self.emit(line, code, f"Possible {code[4:].replace('_', ' ')}: {redacted}")
        if self._always_search_special or b"<|" in encoded:
            self._check_special_tokens(line, encoded)
        self._record_lines.append(line)
        self._record_formats.append(fmt.FORMAT_CODES[kind])
        self._exact_digests += digest(raw.strip())
        self._near_digests += near_digest(encoded, self.config.near_min_chars)

    def _check_special_tokens(self, line: int, encoded: bytes) -> None:
        found = self._special_tokens.findall(encoded)
        if not found:
            return
        first = found[0].decode("utf-8", "replace")
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        self.emit(
            line,
            "special_token_text",
            f"The text contains the special token {first!r}{more}.",
        )

    def _check_unknown_keys(self, line: int, example: dict[str, Any], allowed: frozenset[str]):
        if not example.keys() <= allowed:
            extra = sorted(set(example) - allowed)
            self.emit(line, "unknown_key", f"Unknown top-level key(s): {', '.join(extra)}.")

    def _check_unknown(self, line: int, example: dict[str, Any]) -> None:
        hint = next((h for key, h in fmt.FOREIGN_FORMAT_HINTS.items() if key in example), None)
        keys = ", ".join(sorted(example)[:8]) or "none"
        self.emit(line, "unknown_format", f"Not a known training format (keys: {keys}).", hint)

    def _check_messages(
        self,
        line: int,
        messages: list[Any],
        texts: list[str],
        *,
        where: str = "messages",
        outputs: bool = True,
    ) -> tuple[int, bool, bool, bool, bool, set[str], set[str]]:
        """Validates a message list. Returns (tokens, has_system, has_user, has_assistant,
        has_trainable_assistant, called_function_names, tool_call_ids); assistant content
        tokens are left in ``self._assistant_tokens``. Contents other than system prompts
        are deferred (see _defer): their tokens are not in either figure yet; ``outputs`` says
        whether assistant contents count as the example's assistant tokens."""
        count, defer, role_tokens = self._count, self._defer, self._role_tokens
        # The fast path defers contents inline (the per-message cost of a _defer call is a
        # tenth of the whole scan); the batch is counted after the loop when it is full.
        deferred, owners, flags = (
            self._deferred,
            self._deferred_owner,
            self._deferred_assistant,
        )
        owner = len(self._tokens)
        deferred_chars = 0
        tokens = 0
        assistant_tokens = 0
        has_system = has_user = has_assistant = trainable = False
        called: set[str] = set()
        call_ids: set[str] = set()
        for position, message in enumerate(messages):
            # Fast path for the shape of nearly every message: exactly {role, content}, a
            # non-empty string content and a plain role. Same checks and counts, fewer steps.
            if type(message) is dict and len(message) == 2:
                role = message.get("role")
                content = message.get("content")
                if type(content) is str and content and type(role) is str and role in role_tokens:
                    texts.append(content)
                    tokens += role_tokens[role]
                    if role == "system":  # repeats: the LRU cache answers
                        tokens += count(content)
                        has_system = True
                    else:
                        deferred.append(content)
                        owners.append(owner)
                        deferred_chars += len(content)
                        if role == "user":
                            flags.append(False)
                            has_user = True
                        else:
                            flags.append(outputs)
                            has_assistant = trainable = True
                    continue
            label = f"{where}[{position}]"
            if type(message) is not dict:
                self.emit(line, "message_not_object", f"{label} is not an object.")
                continue
            role = message.get("role")
            content = message.get("content")
            allowed = fmt.MESSAGE_KEYS_BY_ROLE.get(role) if isinstance(role, str) else None
            if role is None:
                self.emit(line, "message_missing_key", f'{label} has no "role".')
            elif allowed is None:
                suggestion = (
                    'Use "system" for developer instructions.' if role == "developer" else None
                )
                self.emit(
                    line, "unrecognized_role", f"{label} has role {_shown(role)}.", suggestion
                )
            elif not message.keys() <= allowed:
                extra = ", ".join(sorted(set(message) - allowed))
                self.emit(line, "message_unrecognized_key", f"{label} ({role}) has key(s) {extra}.")
            is_assistant = role == "assistant"
            tool_calls = message.get("tool_calls") if is_assistant else None
            function_call = message.get("function_call") if is_assistant else None
            if type(content) is str:
                if content:
                    texts.append(content)
                elif not (tool_calls or function_call):
                    self.emit(line, "missing_content", f"{label} has empty content.")
            elif content is None:
                if not (tool_calls or function_call):
                    if "content" in message:
                        self.emit(line, "missing_content", f"{label} has null content.")
                    else:
                        self.emit(line, "message_missing_key", f'{label} has no "content".')
            elif type(content) is list:
                self._check_content_parts(line, label, role, content, texts)
            else:
                self.emit(
                    line,
                    "invalid_content_type",
                    f"{label} content is a {type(content).__name__}.",
                )
            if role == "system":
                has_system = True
            elif role == "user":
                has_user = True
            elif is_assistant:
                has_assistant = True
                weight = message.get("weight", 1)
                if type(weight) is not int or weight not in (0, 1):
                    self.emit(line, "invalid_weight", f"{label} has weight {_shown(weight)}.")
                elif weight == 1:
                    trainable = True
                if tool_calls is not None:
                    self._check_tool_calls(line, label, tool_calls, called, call_ids, texts)
            elif role == "tool":
                call_id = message.get("tool_call_id")
                if not isinstance(call_id, str) or call_id not in call_ids:
                    self.emit(
                        line,
                        "tool_call_id_mismatch",
                        f"{label} answers tool_call_id {_shown(call_id)}, which no earlier "
                        "assistant message called.",
                    )
            if (
                type(content) is str
                and type(role) is str
                and "tool_calls" not in message
                and "function_call" not in message
                and not any(
                    type(value) is str
                    for key, value in message.items()
                    if key != "role" and key != "content"
                )
            ):
                # Role and content are its only strings (e.g. a weighted assistant message):
                # what count_message_tokens would count, with the content deferred.
                tokens += TOKENS_PER_MESSAGE + count(role)
                defer(content, is_assistant and outputs)
            else:
                tokens += count_message_tokens(message, count)
                if is_assistant:
                    assistant_tokens += count_assistant_tokens([message], count)
        if deferred_chars:
            self._deferred_chars += deferred_chars
            if self._deferred_chars >= DEFERRED_CHARS:
                self._count_deferred()
        self._assistant_tokens = assistant_tokens
        return tokens, has_system, has_user, has_assistant, trainable, called, call_ids

    def _check_content_parts(
        self, line: int, label: str, role: Any, parts: list[Any], texts: list[str]
    ) -> None:
        allowed = (
            fmt.CONTENT_PART_TYPES_BY_ROLE.get(role, fmt.DEFAULT_CONTENT_PART_TYPES)
            if type(role) is str
            else fmt.DEFAULT_CONTENT_PART_TYPES
        )
        if not parts:
            self.emit(line, "missing_content", f"{label} has an empty content list.")
            return
        for part in parts:
            kind = part.get("type") if type(part) is dict else type(part).__name__
            if type(part) is not dict or type(kind) is not str or kind not in allowed:
                self.emit(
                    line,
                    "invalid_content_type",
                    f"{label} has a content part of type {_shown(kind)}.",
                )
                return
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    self.emit(
                        line, "invalid_content_type", f"{label} has a text part without text."
                    )
                    return
                texts.append(part["text"])

    def _check_tool_calls(
        self,
        line: int,
        label: str,
        tool_calls: Any,
        called: set[str],
        call_ids: set[str],
        texts: list[str],
    ) -> None:
        if type(tool_calls) is not list or not tool_calls:
            self.emit(line, "invalid_tool_call", f"{label} tool_calls is not a non-empty list.")
            return
        for call in tool_calls:
            function = call.get("function") if type(call) is dict else None
            if (
                type(function) is not dict
                or not isinstance(call.get("id"), str)
                or call.get("type", "function") != "function"
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str)
            ):
                self.emit(line, "invalid_tool_call", f"{label} has a malformed tool call.")
                continue
            call_ids.add(call["id"])
            called.add(function["name"])
            arguments = function["arguments"]
            texts.append(arguments)
            try:
                orjson.loads(arguments)
            except orjson.JSONDecodeError:
                self.emit(
                    line,
                    "tool_call_arguments_not_json",
                    f"{label} calls {function['name']} with arguments that are not JSON.",
                )

    def _check_tools(self, line: int, container: dict[str, Any], called: set[str]) -> int:
        tools = container.get("tools")
        if "functions" in container:
            self.emit(line, "deprecated_functions", "The example uses the deprecated functions.")
        parallel = container.get("parallel_tool_calls")
        if parallel is not None and type(parallel) is not bool:
            self.emit(
                line, "invalid_parallel_tool_calls", f"parallel_tool_calls is {_shown(parallel)}."
            )
        if tools is None:
            return 0
        declared: set[str] = set()
        valid = type(tools) is list
        if valid:
            for tool in tools:
                function = tool.get("function") if type(tool) is dict else None
                if (
                    type(function) is not dict
                    or tool.get("type", "function") != "function"
                    or not isinstance(function.get("name"), str)
                ):
                    valid = False
                    break
                declared.add(function["name"])
        if not valid:
            self.emit(line, "invalid_tools", "tools is not a list of function tools.")
        else:
            for name in sorted(called - declared):
                self.emit(
                    line,
                    "tool_call_unknown_function",
                    f"A tool call uses function {name!r}, which tools does not declare.",
                )
        try:
            return count_tools_tokens(tools, self._count)
        except orjson.JSONEncodeError:  # nested deeper than JSON serialisers go (254 levels)
            self.emit(line, "invalid_tools", "tools nest too deeply to be a function schema.")
            return 0

    def _check_chat(
        self, line: int, example: dict[str, Any], texts: list[str]
    ) -> tuple[int, int, int]:
        self._check_unknown_keys(line, example, fmt.CHAT_KEYS)
        messages = example.get("messages")
        if type(messages) is not list or not messages:
            self.emit(line, "missing_messages_list", '"messages" is missing, empty or not a list.')
            return 0, 0, 0
        tokens, has_system, has_user, has_assistant, trainable, called, _ = self._check_messages(
            line, messages, texts
        )
        tokens += 3 + self._check_tools(line, example, called)
        if not has_assistant:
            self.emit(line, "example_missing_assistant_message", "No assistant message.")
        else:
            if not trainable:
                self.emit(line, "no_trainable_messages", "All assistant messages have weight 0.")
            last = messages[-1]
            if type(last) is dict and last.get("role") != "assistant":
                self.emit(
                    line,
                    "last_message_not_assistant",
                    f"The last message has role {_shown(last.get('role'))}.",
                )
        if not has_system:
            self.emit(line, "no_system_message", "The example has no system message.")
        if not has_user:
            self.emit(line, "no_user_message", "The example has no user message.")
        return tokens, self._assistant_tokens, len(messages)

    def _check_dpo(
        self, line: int, example: dict[str, Any], texts: list[str]
    ) -> tuple[int, int, int]:
        legacy = [key for key in fmt.DPO_LEGACY_OUTPUT_KEYS if key in example]
        if legacy:
            self.emit(
                line, "dpo_legacy_field_names", f"Uses the older name(s) {', '.join(legacy)}."
            )
            example = {fmt.DPO_LEGACY_OUTPUT_KEYS.get(k, k): v for k, v in example.items()}
        self._check_unknown_keys(line, example, fmt.DPO_KEYS)
        tokens = 3
        n_messages = 0
        source = example.get("input")
        messages = source.get("messages") if type(source) is dict else None
        if type(source) is not dict or type(messages) is not list or not messages:
            self.emit(line, "dpo_invalid_input", "input.messages is missing, empty or not a list.")
        else:
            self._check_unknown_keys(line, source, fmt.DPO_INPUT_KEYS)
            input_tokens, *_, called, _ = self._check_messages(
                line, messages, texts, where="input.messages", outputs=False
            )
            tokens += input_tokens + self._check_tools(line, source, called)
            n_messages += len(messages)
            last = messages[-1]
            if type(last) is dict and last.get("role") != "user":
                self.emit(
                    line,
                    "dpo_input_last_not_user",
                    f"input.messages ends with role {_shown(last.get('role'))}.",
                )
        assistant_tokens = 0
        outputs = []
        for key in ("preferred_output", "non_preferred_output"):
            output = example.get(key)
            if (
                type(output) is not list
                or len(output) != 1
                or type(output[0]) is not dict
                or output[0].get("role") != "assistant"
            ):
                self.emit(
                    line, "dpo_invalid_output", f"{key} is not a list of one assistant message."
                )
                continue
            output_tokens, *_ = self._check_messages(line, output, texts, where=key)
            tokens += output_tokens
            assistant_tokens += self._assistant_tokens
            n_messages += 1
            outputs.append(output[0])
        if len(outputs) == 2 and _same(outputs[0], outputs[1]):
            self.emit(line, "dpo_identical_outputs", "The two outputs are identical.")
        return tokens, assistant_tokens, n_messages

    def _check_prompt_completion(
        self, line: int, example: dict[str, Any], texts: list[str]
    ) -> tuple[int, int, int]:
        self._check_unknown_keys(line, example, fmt.PROMPT_COMPLETION_KEYS)
        values: dict[str, str] = {}
        for key in ("prompt", "completion"):
            if key not in example:
                variant = next((k for k in example if k.lower() == key), None)
                suggestion = f'Rename "{variant}" to "{key}".' if variant else None
                self.emit(line, "missing_column", f'No "{key}" field.', suggestion)
                continue
            value = example[key]
            if not isinstance(value, str):
                if value is None and key == "completion":
                    self.emit(line, "empty_completion", "The completion is null.")
                else:
                    self.emit(line, "invalid_field_type", f"{key} is a {type(value).__name__}.")
                continue
            values[key] = value
        if values.get("completion") == "":
            self.emit(line, "empty_completion", "The completion is empty.")
        prompt = values.get("prompt", "")
        completion = values.get("completion", "")
        texts.extend(v for v in (prompt, completion) if v)
        if len(prompt) + len(completion) > self.config.legacy_long_chars:
            self.emit(
                line,
                "long_example",
                f"prompt + completion is {len(prompt) + len(completion)} characters.",
            )
        if len(values) == 2:
            self.result.legacy.add(line, prompt, completion)
        self._defer(prompt, False)
        self._defer(completion, True)
        return 0, 0, 0


def scan_chunk(task: ChunkTask) -> ChunkResult:
    """Worker entry point: reads [start, end) of the file and checks every line in it."""
    with open(task.path, "rb") as handle:
        handle.seek(task.start)
        data = handle.read(task.end - task.start)
    scanner = ChunkScanner(task.config, task.start, task.end)
    scanner.scan_bytes(data, at_file_start=task.start == 0)
    return scanner.result


def severity_of(code: str, config: ScanConfig) -> str:
    return config.pii_severity.get(code) or CODES[code].severity
