"""``validate_file``: streams a JSONL file through the checks, in parallel, into a Report."""

from __future__ import annotations

import multiprocessing
import os
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult
from pathlib import Path

from service.files.validation import formats as fmt
from service.files.validation.checks import (
    COMPLETION_ENDING_FALLBACK,
    COMPLETION_ENDINGS,
    PROMPT_SEPARATOR_FALLBACK,
    PROMPT_SEPARATORS,
    ChunkResult,
    ChunkTask,
    LegacyStats,
    RawFinding,
    ScanConfig,
    scan_chunk,
)
from service.files.validation.codes import CODES
from service.files.validation.dedup import HashIndex
from service.files.validation.estimate import build_estimate
from service.files.validation.report import (
    Distribution,
    FileRole,
    Finding,
    Report,
    TokenStats,
    ValidationFileSummary,
    verdict_for,
)
from service.files.validation.settings import ValidationSettings, context_limit_for
from service.files.validation.sniff import whole_file_problem
from service.files.validation.tokens import encoding_for_model

ProgressCallback = Callable[[int, int], None]


def chunk_boundaries(path: Path, chunk_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of about chunk_bytes, each ending just after a newline (or at EOF)."""
    size = path.stat().st_size
    ranges: list[tuple[int, int]] = []
    start = 0
    with path.open("rb") as handle:
        while start < size:
            end = start + chunk_bytes
            if end >= size:
                end = size
            else:
                handle.seek(end)
                # Read until the next newline; lines longer than a chunk just make it bigger.
                while True:
                    block = handle.read(64 * 1024)
                    if not block:
                        end = size
                        break
                    newline = block.find(b"\n")
                    if newline >= 0:
                        end += newline + 1
                        break
                    end += len(block)
            ranges.append((start, end))
            start = end
    return ranges


def _run_chunks(tasks: list[ChunkTask], workers: int, parallel: bool) -> Iterator[ChunkResult]:
    """The chunks' results in file order.

    With ``workers`` = N the calling process is one of the N: N-1 spawned helpers take chunks
    from the front of the file (two queued each, so none waits) while the caller scans the
    next chunk itself. The tokenizer (~70 MB per process) is then loaded N times, not N+1,
    and the caller never sits idle waiting for a pool; a slow helper just leaves it more.
    """
    if not parallel or workers <= 1 or len(tasks) <= 1:
        yield from map(scan_chunk, tasks)
        return
    helpers = min(workers - 1, len(tasks) - 1)
    # spawn, not fork: validate_file runs inside threaded servers and Celery workers.
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=helpers) as pool:
        queued: deque[tuple[int, AsyncResult[ChunkResult]]] = deque()
        finished: dict[int, ChunkResult] = {}
        next_task = next_result = 0
        while next_result < len(tasks):
            while len(queued) < 2 * helpers and next_task < len(tasks):
                queued.append((next_task, pool.apply_async(scan_chunk, (tasks[next_task],))))
                next_task += 1
            if next_task < len(tasks):
                finished[next_task] = scan_chunk(tasks[next_task])
                next_task += 1
            elif queued:
                index, pending = queued.popleft()
                finished[index] = pending.get()
            while queued and queued[0][1].ready():
                index, pending = queued.popleft()
                finished[index] = pending.get()
            while next_result in finished:
                yield finished.pop(next_result)
                next_result += 1


@dataclass
class FileScan:
    """Everything merged from one file's chunks."""

    path: Path
    role: FileRole
    bytes: int = 0
    lines: int = 0
    examples: int = 0
    formats: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    tokens_hist: Counter[int] = field(default_factory=Counter)
    assistant_hist: Counter[int] = field(default_factory=Counter)
    messages_hist: Counter[int] = field(default_factory=Counter)
    legacy: LegacyStats = field(default_factory=LegacyStats)
    # line -> format code for examples, kept only as (line, code) for off-format lines later.
    dominant_format: str = fmt.UNKNOWN
    dedup_saturated: bool = False
    # Set when the file is not JSONL as a whole (sniff.py): its one finding says it all.
    whole_file_problem: bool = False


class FindingSink:
    """Applies the per-code cap to findings while counting every occurrence."""

    def __init__(self, scan: FileScan, config: ScanConfig, cap: int) -> None:
        self.scan, self.config, self.cap = scan, config, cap
        self._kept: Counter[str] = Counter()

    def add(self, raw: RawFinding, *, counted: bool = False) -> None:
        if not counted:
            self.scan.counts[raw.code] += 1
        if self._kept[raw.code] >= self.cap:
            return
        self._kept[raw.code] += 1
        info = CODES[raw.code]
        self.scan.findings.append(
            Finding(
                line=raw.line,
                code=raw.code,
                severity=self.config.pii_severity.get(raw.code) or info.severity,  # type: ignore[arg-type]
                message=raw.message,
                suggestion=raw.suggestion or info.suggestion,
                file=self.scan.role,
            )
        )


def _scan_file(
    path: Path,
    role: FileRole,
    config: ScanConfig,
    settings: ValidationSettings,
    workers: int,
    progress: ProgressCallback | None,
    exact_index: HashIndex,
    near_index: HashIndex,
    leak_indexes: tuple[HashIndex, HashIndex] | None,
) -> FileScan:
    scan = FileScan(path=path, role=role, bytes=path.stat().st_size)
    sink = FindingSink(scan, config, settings.findings_cap_per_code)
    problem = whole_file_problem(path)
    if problem is not None:
        scan.whole_file_problem = True
        sink.add(RawFinding(None, problem.code, problem.message, problem.suggestion))
        return scan
    ranges = chunk_boundaries(path, settings.chunk_bytes)
    tasks = [ChunkTask(str(path), start, end, config) for start, end in ranges]
    parallel = scan.bytes >= settings.parallel_min_bytes
    # The first lines of each format, enough to report off-format lines (findings are capped
    # per code) once the dominant format is known; the counts come from scan.formats.
    format_lines: dict[int, list[int]] = {}
    line_offset = 0
    for result in _run_chunks(tasks, workers, parallel):
        for raw in result.findings:
            if raw.line is not None:
                raw.line += line_offset
            sink.add(raw, counted=True)
        scan.counts.update(result.counts)
        scan.lines += result.lines
        scan.examples += result.examples
        scan.formats.update(result.formats)
        scan.tokens_hist.update(result.tokens_hist)
        scan.assistant_hist.update(result.assistant_hist)
        scan.messages_hist.update(result.messages_hist)
        scan.legacy.merge(result.legacy, line_offset)
        records = array("Q")
        records.frombytes(result.records)
        _check_duplicates(
            records,
            line_offset,
            sink,
            exact_index,
            near_index,
            leak_indexes,
            format_lines,
        )
        line_offset += result.lines
        if progress is not None:
            progress(result.end, scan.bytes)
    scan.dedup_saturated = exact_index.saturated or near_index.saturated
    _check_formats(scan, sink, format_lines)
    return scan


def _check_duplicates(
    records: array[int],
    line_offset: int,
    sink: FindingSink,
    exact_index: HashIndex,
    near_index: HashIndex,
    leak_indexes: tuple[HashIndex, HashIndex] | None,
    format_lines: dict[int, list[int]],
) -> None:
    if leak_indexes is None and len(records) >= 4 * _VECTOR_MIN_RECORDS:
        _check_duplicates_vectorised(
            records, line_offset, sink, exact_index, near_index, format_lines
        )
        return
    cap = sink.cap
    for position in range(0, len(records), 4):
        line = records[position] + line_offset
        exact, near, format_code = records[position + 1 : position + 4]
        lines_of_format = format_lines.setdefault(format_code, [])
        if len(lines_of_format) < cap:
            lines_of_format.append(line)
        if leak_indexes is not None:
            train_exact, train_near = leak_indexes
            first = train_exact.get(exact)
            kind = "the same as"
            if first is None and near:
                first, kind = train_near.get(near), "nearly the same as"
            if first is not None:
                sink.add(
                    RawFinding(
                        line,
                        "train_validation_leak",
                        f"The example is {kind} training line {first}.",
                    )
                )
        _check_line(sink, exact_index, near_index, line, exact, near)


def _check_line(
    sink: FindingSink,
    exact_index: HashIndex,
    near_index: HashIndex,
    line: int,
    exact: int,
    near: int,
    *,
    exact_is_new: bool = False,
) -> None:
    """One line against the indexes: its exact key first, then (unless it is an exact
    duplicate) its near key, if it has one. ``exact_is_new``: already recorded as new."""
    if not exact_is_new:
        first = exact_index.add_or_get(exact, line)
        if first is not None:
            sink.add(RawFinding(line, "exact_duplicate", f"Same example as line {first}."))
            return
    if near:
        first = near_index.add_or_get(near, line)
        if first is not None:
            sink.add(
                RawFinding(line, "near_duplicate", f"Nearly the same example as line {first}.")
            )


# Below this many examples a chunk goes through the per-line loop (numpy's set-up costs more).
_VECTOR_MIN_RECORDS = 64


def _check_duplicates_vectorised(
    records: array[int],
    line_offset: int,
    sink: FindingSink,
    exact_index: HashIndex,
    near_index: HashIndex,
    format_lines: dict[int, list[int]],
) -> None:
    """_check_duplicates for a training chunk, with the same findings in the same order:
    the keys that are new for sure (nearly all of them) are recorded in one numpy step per
    index, and only the rest go through ``add_or_get`` one line at a time, in line order.
    A line whose exact key was new but whose near key was not still has its near key
    checked in that loop."""
    import numpy as np

    table = np.frombuffer(records, dtype=np.uint64).reshape(-1, 4)
    lines = table[:, 0] + np.uint64(line_offset)
    exact, near, formats = table[:, 1], table[:, 2], table[:, 3]
    cap = sink.cap
    for code in np.unique(formats).tolist():
        lines_of_format = format_lines.setdefault(code, [])
        room = cap - len(lines_of_format)
        if room > 0:
            lines_of_format.extend(lines[formats == code][:room].tolist())
    everyone = np.ones(len(exact), dtype=bool)
    exact_new = exact_index.add_fresh(exact, lines, everyone)
    has_near = near != 0
    near_new = near_index.add_fresh(near, lines, exact_new & has_near)
    settled = exact_new & (near_new | ~has_near)
    for position in np.flatnonzero(~settled).tolist():
        _check_line(
            sink,
            exact_index,
            near_index,
            int(lines[position]),
            int(exact[position]),
            int(near[position]),
            exact_is_new=bool(exact_new[position]),
        )


def _check_formats(scan: FileScan, sink: FindingSink, format_lines: dict[int, list[int]]) -> None:
    known = Counter({k: n for k, n in scan.formats.items() if k != fmt.UNKNOWN})
    scan.dominant_format = known.most_common(1)[0][0] if known else fmt.UNKNOWN
    for name, total in known.items():
        if name == scan.dominant_format:
            continue
        lines = format_lines.get(fmt.FORMAT_CODES[name], [])
        for line in lines:
            sink.add(
                RawFinding(
                    line, "mixed_formats", f"A {name} example in a {scan.dominant_format} file."
                )
            )
        scan.counts["mixed_formats"] += total - len(lines)  # beyond the cap: counted only
    if scan.counts.get("mixed_formats") == 0:
        del scan.counts["mixed_formats"]


def _check_file_level(scan: FileScan, sink: FindingSink, settings: ValidationSettings) -> None:
    if scan.whole_file_problem:
        return
    if scan.examples == 0 and scan.counts.total() == 0:
        sink.add(RawFinding(None, "empty_file", "The file holds no examples."))
    elif scan.examples < settings.min_examples:
        sink.add(
            RawFinding(
                None,
                "too_few_examples",
                f"{scan.examples} examples; at least {settings.min_examples} are required.",
            )
        )
    elif scan.examples < settings.recommended_examples and scan.role == "training":
        sink.add(
            RawFinding(
                None,
                "few_examples",
                f"{scan.examples} examples; {settings.recommended_examples}+ are recommended.",
            )
        )
    if scan.dedup_saturated:
        sink.add(RawFinding(None, "dedup_partial", "Duplicate detection covered part of the file."))


def legacy_findings(legacy: LegacyStats) -> tuple[list[RawFinding], dict]:
    """prepare_data's whole-file validators over the merged prompt/completion aggregates."""
    found: list[RawFinding] = []
    if legacy.n == 0:
        return found, {}
    open_ended = legacy.all_prompts_empty
    unique = None if legacy.distinct_overflow else len(legacy.distinct_completions)
    if open_ended:
        task_type = "open-ended generation"
    elif unique is not None and unique < legacy.n / 3:
        task_type = "classification"
    else:
        task_type = "conditional generation"
    info: dict = {"task_type": task_type, "examples": legacy.n}
    if legacy.prompt_upper * 2 > legacy.prompt_lower:
        found.append(
            RawFinding(None, "uppercase_prompts", "Over 1/3 of prompt letters are uppercase.")
        )
    if legacy.completion_upper * 2 > legacy.completion_lower:
        found.append(
            RawFinding(
                None, "uppercase_completions", "Over 1/3 of completion letters are uppercase."
            )
        )
    if not open_ended:
        if legacy.n > 1 and not legacy.prompts_differ:
            found.append(RawFinding(None, "identical_prompts", "All prompts are identical."))
        suffix = legacy.prompt_suffix or ""
        info["common_prompt_suffix"] = suffix
        if suffix and len(suffix) > 10:
            found.append(
                RawFinding(
                    None, "long_prompt_separator", f"The common prompt suffix {suffix!r} is long."
                )
            )
        elif not suffix:
            candidates = [s for s in PROMPT_SEPARATORS if s not in legacy.separators_seen]
            if legacy.newline_in_prompt and " ->" in candidates:
                candidates.remove(" ->")
            separator = candidates[0] if candidates else PROMPT_SEPARATOR_FALLBACK
            found.append(
                RawFinding(
                    None,
                    "missing_prompt_separator",
                    "Prompts share no common ending separator.",
                    f"Append {separator!r} to every prompt and to prompts at inference time.",
                )
            )
    prefix = legacy.prompt_prefix or ""
    if len(prefix) > 12:
        info["common_prompt_prefix"] = prefix
        found.append(
            RawFinding(None, "common_prompt_prefix", f"Every prompt starts with {prefix[:40]!r}.")
        )
    completion_prefix = legacy.completion_prefix or ""
    if len(completion_prefix) >= 5:
        found.append(
            RawFinding(
                None,
                "common_completion_prefix",
                f"Every completion starts with {completion_prefix[:40]!r}.",
            )
        )
    if not open_ended and task_type != "classification":
        if legacy.n > 1 and not legacy.completions_differ:
            found.append(
                RawFinding(None, "identical_completions", "All completions are identical.")
            )
        completion_suffix = legacy.completion_suffix or ""
        info["common_completion_suffix"] = completion_suffix
        if completion_suffix and len(completion_suffix) > 10:
            found.append(
                RawFinding(
                    None,
                    "long_prompt_separator",
                    f"The common completion suffix {completion_suffix!r} is long.",
                )
            )
        elif not completion_suffix:
            endings = [e for e in COMPLETION_ENDINGS if e not in legacy.endings_seen]
            ending = endings[0] if endings else COMPLETION_ENDING_FALLBACK
            found.append(
                RawFinding(
                    None,
                    "missing_completion_ending",
                    "Completions share no common ending.",
                    f"Append {ending!r} to every completion and pass stop=[{ending!r}].",
                )
            )
    if legacy.completions_without_space:
        found.append(
            RawFinding(
                legacy.first_line_without_space,
                "completion_no_leading_space",
                f"{legacy.completions_without_space} completions don't start with whitespace.",
            )
        )
    return found, info


def distribution(histogram: Counter[int]) -> Distribution:
    n = histogram.total()
    if n == 0:
        return Distribution()
    ordered = sorted(histogram.items())
    total = sum(value * count for value, count in ordered)

    def quantile(q: float) -> int:
        # Nearest-rank quantile: the smallest value with at least q of the examples at or below.
        rank = max(1, -(-int(q * n * 1000) // 1000))
        seen = 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                return value
        return ordered[-1][0]

    return Distribution(
        min=ordered[0][0],
        max=ordered[-1][0],
        mean=round(total / n, 2),
        p50=quantile(0.5),
        p90=quantile(0.9),
        p99=quantile(0.99),
    )


def _scan_config(
    settings: ValidationSettings,
    encoding: str,
    context_limit: int,
    special_tokens: Sequence[str] = (),
) -> ScanConfig:
    return ScanConfig(
        encoding=encoding,
        context_limit=context_limit,
        findings_cap=settings.findings_cap_per_code,
        pii_enabled=settings.pii_enabled,
        pii_severity=dict(settings.pii_severity),
        near_min_chars=settings.near_duplicate_min_chars,
        legacy_long_chars=settings.legacy_long_example_chars,
        token_cache_size=settings.token_cache_size,
        special_tokens=tuple(special_tokens),
    )


def _sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(
        findings,
        key=lambda f: (f.file != "training", f.line is not None, f.line or 0, f.code),
    )


def validate_file(
    path: Path,
    *,
    model: str | None = None,
    validation_path: Path | None = None,
    settings: ValidationSettings | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    special_tokens: Sequence[str] = (),
) -> Report:
    """Pre-flight checks, token statistics and a cost estimate for one training file.

    ``special_tokens``: a local base model's own special tokens, flagged in content beside
    every ``<|name|>`` (see special_tokens.configured_special_tokens)."""
    started = time.perf_counter()
    settings = settings or ValidationSettings()
    model = model or settings.default_model
    workers = workers or os.cpu_count() or 1
    path = Path(path)
    encoding = encoding_for_model(model)
    context_limit = context_limit_for(model, settings)
    config = _scan_config(settings, encoding, context_limit, special_tokens)

    exact_index = HashIndex(settings.dedup_capacity)
    near_index = HashIndex(settings.dedup_capacity)
    training = _scan_file(
        path, "training", config, settings, workers, progress, exact_index, near_index, None
    )
    sink = FindingSink(training, config, settings.findings_cap_per_code)
    _check_file_level(training, sink, settings)
    legacy_info: dict = {}
    if training.dominant_format == fmt.PROMPT_COMPLETION:
        extra, legacy_info = legacy_findings(training.legacy)
        for raw in extra:
            sink.add(raw)

    validation_summary = None
    findings = list(training.findings)
    counts = Counter(training.counts)
    if validation_path is not None:
        validation_path = Path(validation_path)
        capacity = max(1024, settings.dedup_capacity // 4)
        validation = _scan_file(
            validation_path,
            "validation",
            config,
            settings,
            workers,
            None,
            HashIndex(capacity),
            HashIndex(capacity),
            (exact_index, near_index),
        )
        validation_sink = FindingSink(validation, config, settings.findings_cap_per_code)
        _check_file_level(validation, validation_sink, settings)
        if (
            validation.dominant_format != fmt.UNKNOWN
            and training.dominant_format != fmt.UNKNOWN
            and validation.dominant_format != training.dominant_format
        ):
            validation_sink.add(
                RawFinding(
                    None,
                    "mixed_formats",
                    f"The validation file is {validation.dominant_format}, "
                    f"the training file {training.dominant_format}.",
                )
            )
        findings.extend(validation.findings)
        counts.update(validation.counts)
        validation_summary = ValidationFileSummary(
            path=str(validation_path),
            format=validation.dominant_format,  # type: ignore[arg-type]
            examples=validation.examples,
            tokens_total=sum(t * n for t, n in validation.tokens_hist.items()),
            counts_by_code=dict(sorted(validation.counts.items())),
        )

    severities: Counter[str] = Counter()
    for code, n in counts.items():
        severities[config.pii_severity.get(code) or CODES[code].severity] += n
    histogram = sorted(training.tokens_hist.items())
    estimate = build_estimate(
        model=model,
        counted_encoding=encoding,
        n_examples=training.examples,
        histogram=histogram,
        n_epochs="auto",
        settings=settings,
    )
    tokens = TokenStats(
        encoding=encoding,
        total=sum(t * n for t, n in histogram),
        per_example=distribution(training.tokens_hist),
        assistant_total=sum(t * n for t, n in training.assistant_hist.items()),
        assistant_per_example=distribution(training.assistant_hist),
        messages_per_example=distribution(training.messages_hist),
        n_too_long=sum(n for t, n in histogram if t > context_limit),
        billed_per_epoch=estimate.billed_tokens_per_epoch,
        histogram=histogram,
    )
    cap = settings.findings_cap_per_code
    return Report(
        path=str(path),
        format=training.dominant_format,  # type: ignore[arg-type]
        formats_seen=dict(training.formats),
        verdict=verdict_for(severities),
        examples=training.examples,
        lines=training.lines,
        bytes=training.bytes,
        model=model,
        context_limit=context_limit,
        tokens=tokens,
        estimate=estimate,
        counts_by_code=dict(sorted(counts.items())),
        counts_by_severity={"error": severities["error"], "warning": severities["warning"]},
        findings=_sorted_findings(findings),
        findings_cap_per_code=cap,
        findings_truncated=any(n > cap for n in counts.values()),
        legacy=legacy_info,
        validation_file=validation_summary,
        duration_seconds=round(time.perf_counter() - started, 3),
    )
