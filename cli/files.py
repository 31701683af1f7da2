"""ftq files commands: offline pre-flight validation, split, convert and review samples."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.main import main

if TYPE_CHECKING:
    from service.files.validation.report import Finding, Report
    from service.files.validation.settings import ValidationSettings

EXIT_OK = 0
EXIT_BLOCKED = 1
# Files at least this big get a progress bar on stderr.
PROGRESS_MIN_BYTES = 20 * 1024 * 1024

_existing_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


def _validation_settings() -> ValidationSettings:
    from service.files.validation.settings import ValidationSettings

    try:
        from service.config import get_settings

        embedded = getattr(get_settings(), "validation", None)
    except Exception:  # the offline CLI must work without a configured deployment
        embedded = None
    return embedded if isinstance(embedded, ValidationSettings) else ValidationSettings()


@main.group()
def files() -> None:
    """Work with training files offline (validate, split, convert, sample)."""


METHOD_TYPES = ("supervised", "dpo", "reinforcement", "full", "freeze", "lora")
# Findings that say the file as a whole is not JSONL: printed as one line, nothing else.
WHOLE_FILE_CODES = frozenset(
    {"empty_file", "encoding_utf16", "encoding_utf32", "json_array_file", "csv_file"}
)
EXAMPLES_PER_CODE = 3
SOURCE_LABELS = {
    "encoding_utf16": "UTF-16",
    "encoding_utf32": "UTF-32",
    "json_array_file": "a JSON array",
    "csv_file": "CSV",
}


def _deployment_models() -> tuple[list[str], dict[str, str]]:
    """(fine-tunable models, local allow-list) of the configured deployment, or the defaults."""
    from service.config import Settings

    try:
        from service.config import get_settings

        settings = get_settings()
    except Exception:  # the offline CLI must work without a configured deployment
        settings = Settings.model_construct()
    return list(settings.fine_tunable_models), dict(settings.local.allowed_base_models)


def _model_findings(report: Report, model: str | None, method: str | None) -> list[Finding]:
    """An unknown --model is a warning (its defaults are guesses), and the file's format is
    checked against the model and method it was validated for."""
    from service.files.compat import fit_findings
    from service.files.validation.report import Finding
    from service.files.validation.tokens import base_model

    if model is None and method is None:
        return []
    known, local_models = _deployment_models()
    local = report.model in local_models
    found: list[Finding] = []
    if model is not None and not local and base_model(model) not in known:
        found.append(
            Finding(
                line=None,
                code="unknown_model",
                severity="warning",
                message=f"{model!r} is not a model this deployment fine-tunes; tokens were "
                f"counted with {report.tokens.encoding}, a {report.context_limit:,}-token "
                f"context and ${report.estimate.price_per_million_tokens}/1M, the defaults "
                "for names it does not know.",
                suggestion="Check the name (e.g. gpt-4o-mini-2024-07-18); known: "
                + ", ".join(known[:8]),
            )
        )
    found += fit_findings(report.format, report.model, method, local=local)
    return found


@files.command("validate")
@click.argument("path", type=_existing_file)
@click.option("--model", "-m", default=None, help="Target model (sets encoding, context, price).")
@click.option(
    "--method",
    type=click.Choice(METHOD_TYPES),
    default=None,
    help="The job's method; the file's format is checked against it (default supervised).",
)
@click.option("--validation-file", "validation_file", type=_existing_file, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON report.")
@click.option(
    "--findings-cap",
    type=click.IntRange(min=0),
    default=None,
    help="Findings listed per code in the report (default 100; 0 lists every one). "
    "counts_by_code always counts every occurrence.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Default: CPU count.")
def validate(
    path: Path,
    model: str | None,
    method: str | None,
    validation_file: Path | None,
    as_json: bool,
    findings_cap: int | None,
    workers: int | None,
) -> None:
    """Check PATH before spending money: exit 0 pass/warn, 1 block, 2 usage error."""
    import orjson

    from service.files.validation.report import add_findings
    from service.files.validation.special_tokens import configured_special_tokens
    from service.files.validation.validator import validate_file

    settings = _validation_settings()
    if findings_cap is not None:
        cap = findings_cap or 2**31 - 1
        settings = settings.model_copy(update={"findings_cap_per_code": cap})
    special = configured_special_tokens(model) if model else ()
    size = path.stat().st_size
    show_progress = size >= PROGRESS_MIN_BYTES and not as_json
    options = dict(
        model=model,
        validation_path=validation_file,
        settings=settings,
        workers=workers,
        special_tokens=special,
    )
    if show_progress:
        with click.progressbar(
            length=size, label="Validating", file=sys.stderr, show_pos=False
        ) as bar:
            done = [0]

            def advance(done_bytes: int, _total: int) -> None:
                bar.update(done_bytes - done[0])
                done[0] = done_bytes

            report = validate_file(path, progress=advance, **options)  # type: ignore[arg-type]
    else:
        report = validate_file(path, **options)  # type: ignore[arg-type]
    extra = _model_findings(report, model, method)
    if extra:
        report = add_findings(report, extra)
    if as_json:
        click.echo(orjson.dumps(report.model_dump(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_report(report)
    sys.exit(EXIT_BLOCKED if report.verdict == "block" else EXIT_OK)


def _print_whole_file_problem(report: Report) -> bool:
    """One line for a file that is not JSONL at all (empty, UTF-16, a JSON array, CSV)."""
    if report.examples or not report.findings:
        return False
    first = report.findings[0]
    if first.code not in WHOLE_FILE_CODES or len(report.counts_by_code) != 1:
        return False
    click.secho(
        f"{report.path}: {report.verdict.upper()} {first.code}: {first.message} "
        f"Fix: {first.suggestion}",
        fg="red" if report.verdict == "block" else "yellow",
    )
    return True


def _print_report(report: Report) -> None:
    if _print_whole_file_problem(report):
        return
    tokens, estimate = report.tokens, report.estimate
    per = tokens.per_example
    rows = [
        ("file", report.path),
        ("format", report.format),
        ("examples", f"{report.examples:,} ({report.lines:,} lines, {report.bytes:,} bytes)"),
        ("model", f"{report.model} ({tokens.encoding}, context {report.context_limit:,})"),
        ("tokens", f"{tokens.total:,} total, {tokens.assistant_total:,} assistant"),
        (
            "per example",
            f"min {per.min} / mean {per.mean} / p50 {per.p50} / p90 {per.p90} / "
            f"p99 {per.p99} / max {per.max}",
        ),
        ("truncated", f"{tokens.n_too_long:,} examples over the context"),
        (
            "estimate",
            f"{estimate.n_epochs} epochs x {estimate.billed_tokens_per_epoch:,} = "
            f"{estimate.billed_tokens:,} billed tokens ~ ${estimate.cost_usd:,.2f} "
            f"at ${estimate.price_per_million_tokens}/1M",
        ),
    ]
    if report.validation_file is not None:
        summary = report.validation_file
        rows.append(("validation", f"{summary.path}: {summary.examples:,} examples"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label:<{width}}  {value}")
    _print_findings(report)
    colour = {"pass": "green", "warn": "yellow", "block": "red"}[report.verdict]
    click.echo("")
    click.secho(f"verdict: {report.verdict.upper()}", fg=colour, bold=True)


def _print_findings(report: Report) -> None:
    """Errors first, then warnings; within each, codes by count, each with its fix once and
    its first few lines."""
    by_code: dict[str, list[Finding]] = {}
    for finding in report.findings:
        by_code.setdefault(finding.code, []).append(finding)
    for severity, title in (("error", "errors"), ("warning", "warnings")):
        codes = [c for c, found in by_code.items() if found[0].severity == severity]
        if not codes:
            continue
        total = sum(report.counts_by_code.get(c, len(by_code[c])) for c in codes)
        click.echo("")
        click.secho(f"{title} ({total:,})", bold=True)
        for code in sorted(codes, key=lambda c: (-report.counts_by_code.get(c, 0), c)):
            found = by_code[code]
            count = report.counts_by_code.get(code, len(found))
            click.echo(f"  {code} x{count:,}: {found[0].suggestion}")
            for finding in found[:EXAMPLES_PER_CODE]:
                where = f"{finding.file} line {finding.line}" if finding.line else finding.file
                click.echo(f"      {where}: {finding.message}")
            if count > EXAMPLES_PER_CODE:
                click.echo(f"      ... {count - EXAMPLES_PER_CODE:,} more")
    if report.findings_truncated:
        click.echo("")
        click.echo(
            f"--json lists the first {report.findings_cap_per_code:,} findings of each code "
            "(--findings-cap 0 lists all); counts_by_code counts every occurrence."
        )


@files.command("split")
@click.argument("path", type=_existing_file)
@click.option(
    "--validation",
    "validation_fraction",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    required=True,
    help="Fraction of examples for the validation file, e.g. 0.1.",
)
@click.option("--seed", type=int, required=True)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Default: next to PATH.",
)
def split(path: Path, validation_fraction: float, seed: int, out_dir: Path | None) -> None:
    """Write PATH's examples to <stem>_train.jsonl and <stem>_valid.jsonl, deterministically."""
    from service.files.validation.transform import split_file

    out_dir = out_dir or path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    train = out_dir / f"{path.stem}_train.jsonl"
    valid = out_dir / f"{path.stem}_valid.jsonl"
    n_train, n_valid = split_file(
        path, train, valid, validation_fraction=validation_fraction, seed=seed
    )
    click.echo(f"{train}: {n_train:,} examples")
    click.echo(f"{valid}: {n_valid:,} examples")


@files.command("convert")
@click.argument("path", type=_existing_file)
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--system-prompt", default=None, help="System message to prepend to each example.")
def convert(path: Path, dst: Path, system_prompt: str | None) -> None:
    """Write PATH as JSONL to DST: a JSON array, a CSV table (prompt/completion or messages
    columns) or a UTF-16 file becomes JSONL; a prompt/completion JSONL file becomes chat."""
    from service.files.validation.sniff import whole_file_problem
    from service.files.validation.transform import (
        convert_prompt_completion_to_chat,
        convert_to_jsonl,
    )

    if path.resolve() == dst.resolve():
        raise click.UsageError("DST must be another file than PATH.")
    problem = whole_file_problem(path)
    try:
        if problem is not None and problem.code != "empty_file":
            kind, written = convert_to_jsonl(path, dst)
            source = " ".join(SOURCE_LABELS.get(part, part) for part in kind.split("+"))
            click.echo(f"{dst}: {written:,} records as JSONL (from {source})")
            return
        written = convert_prompt_completion_to_chat(path, dst, system_prompt=system_prompt)
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{dst}: {written:,} chat examples")


@files.command("sample")
@click.argument("path", type=_existing_file)
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample(path: Path, count: int, seed: int) -> None:
    """Print a reproducible random sample of examples (JSONL, prefixed by line) for review."""
    import json

    import orjson

    from service.files.validation.transform import sample_lines

    for line, example in sample_lines(path, count, seed):
        try:
            text = orjson.dumps(example).decode()
        except orjson.JSONEncodeError:  # nested past orjson's 254 levels: the stdlib copes
            text = json.dumps(example, ensure_ascii=False, separators=(",", ":"))
        click.echo(f"{line}\t{text}")
