"""ftq files commands: offline pre-flight validation, split, convert and review samples."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.main import main

if TYPE_CHECKING:
    from service.files.validation.report import Report
    from service.files.validation.settings import ValidationSettings

EXIT_OK = 0
EXIT_BLOCKED = 1
# Files at least this big get a progress bar on stderr.
PROGRESS_MIN_BYTES = 20 * 1024 * 1024
MAX_FINDINGS_SHOWN = 30

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


@files.command("validate")
@click.argument("path", type=_existing_file)
@click.option("--model", "-m", default=None, help="Target model (sets encoding, context, price).")
@click.option("--validation-file", "validation_file", type=_existing_file, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON report.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Default: CPU count.")
def validate(
    path: Path, model: str | None, validation_file: Path | None, as_json: bool, workers: int | None
) -> None:
    """Check PATH before spending money: exit 0 pass/warn, 1 block, 2 usage error."""
    import orjson

    from service.files.validation.validator import validate_file

    settings = _validation_settings()
    size = path.stat().st_size
    show_progress = size >= PROGRESS_MIN_BYTES
    if show_progress:
        with click.progressbar(
            length=size, label="Validating", file=sys.stderr, show_pos=False
        ) as bar:
            done = [0]

            def advance(done_bytes: int, _total: int) -> None:
                bar.update(done_bytes - done[0])
                done[0] = done_bytes

            report = validate_file(
                path,
                model=model,
                validation_path=validation_file,
                settings=settings,
                workers=workers,
                progress=advance,
            )
    else:
        report = validate_file(
            path, model=model, validation_path=validation_file, settings=settings, workers=workers
        )
    if as_json:
        click.echo(orjson.dumps(report.model_dump(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_report(report)
    sys.exit(EXIT_BLOCKED if report.verdict == "block" else EXIT_OK)


def _print_report(report: Report) -> None:
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
    if report.counts_by_code:
        click.echo("")
        click.echo(f"{'code':<36} {'severity':<8} {'count':>9}")
        severity_of = {f.code: f.severity for f in report.findings}
        for code, count in sorted(report.counts_by_code.items(), key=lambda kv: (-kv[1], kv[0])):
            click.echo(f"{code:<36} {severity_of.get(code, ''):<8} {count:>9,}")
        click.echo("")
        for finding in report.findings[:MAX_FINDINGS_SHOWN]:
            where = f"{finding.file}:{finding.line}" if finding.line is not None else finding.file
            click.echo(f"{where:>18}  {finding.severity:<7} {finding.code}: {finding.message}")
            click.echo(f"{'':>18}  {'':<7} -> {finding.suggestion}")
        hidden = len(report.findings) - MAX_FINDINGS_SHOWN
        if hidden > 0:
            click.echo(f"... {hidden} more findings (use --json for all)")
    colour = {"pass": "green", "warn": "yellow", "block": "red"}[report.verdict]
    click.echo("")
    click.secho(f"verdict: {report.verdict.upper()}", fg=colour, bold=True)


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
    """Convert a prompt/completion file at PATH to chat format in DST."""
    from service.files.validation.transform import convert_prompt_completion_to_chat

    try:
        written = convert_prompt_completion_to_chat(path, dst, system_prompt=system_prompt)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{dst}: {written:,} chat examples")


@files.command("sample")
@click.argument("path", type=_existing_file)
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample(path: Path, count: int, seed: int) -> None:
    """Print a reproducible random sample of examples (JSONL, prefixed by line) for review."""
    import orjson

    from service.files.validation.transform import sample_lines

    for line, example in sample_lines(path, count, seed):
        click.echo(f"{line}\t{orjson.dumps(example).decode()}")
