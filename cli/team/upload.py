"""``ftq files upload PATH``: upload with a progress bar, then the pre-flight report's verdict.

Exit status: 0 when the report passes or warns, 1 when it blocks (as ``ftq files validate``),
1 on an API error; ``--no-wait`` returns right after the upload.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli.files import files as files_group
from cli.team import connection
from cli.team.connection import api_errors, console

REPORT_DONE = ("completed", "error", "skipped")
TOP_FINDINGS = 5


class _CountingFile(io.FileIO):
    """A file whose reads advance a progress bar (the SDK streams it to the server)."""

    def __init__(self, path: Path, on_read: Any) -> None:
        super().__init__(path, "rb")
        self._on_read = on_read

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if chunk:
            self._on_read(len(chunk))
        return chunk


def upload_file(client: Any, path: Path, *, purpose: str, show_progress: bool) -> Any:
    """Upload ``path``; a byte progress bar on the console while it goes."""
    size = path.stat().st_size
    with Progress(
        TextColumn("uploading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    ) as progress:
        task = progress.add_task(path.name, total=size)
        with _CountingFile(path, lambda n: progress.advance(task, n)) as handle:
            uploaded = client.files.create(file=(path.name, handle), purpose=purpose)
        progress.update(task, completed=size)
    return uploaded


def wait_for_report(client: Any, file_id: str, *, timeout: float) -> dict[str, Any]:
    """The file's validation answer once its report is done (or as it is at the timeout)."""
    deadline = time.monotonic() + timeout
    delay = 0.3
    while True:
        answer: dict[str, Any] = client.get(f"/files/{file_id}/validation", cast_to=object)
        if answer.get("status") in REPORT_DONE or time.monotonic() > deadline:
            return answer
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def print_report(answer: dict[str, Any]) -> None:
    report = answer.get("report") or {}
    verdict = answer.get("verdict") or answer.get("status")
    colour = {"pass": "green", "warn": "yellow", "block": "red"}.get(str(verdict), "white")
    console.print(f"verdict: [bold {colour}]{verdict}[/]", end="")
    if report:
        estimate = report.get("estimate") or {}
        console.print(
            f"  ({report.get('examples')} examples, format {report.get('format')}, "
            f"{estimate.get('billed_tokens', '?')} billed tokens, "
            f"estimated ${estimate.get('cost_usd', 0):.2f})"
        )
    else:
        console.print()
    counts = report.get("counts_by_code") or {}
    if counts:
        console.print("codes: " + ", ".join(f"{code} x{n}" for code, n in sorted(counts.items())))
    findings = report.get("findings") or []
    if findings:
        table = Table(title=f"top findings ({len(findings)} in the report)", title_justify="left")
        for column in ("line", "severity", "code", "message", "fix"):
            table.add_column(column, overflow="fold")
        order = {"error": 0, "warning": 1, "info": 2}
        for finding in sorted(findings, key=lambda f: order.get(f.get("severity"), 3))[
            :TOP_FINDINGS
        ]:
            line = finding.get("line")
            table.add_row(
                str(line) if line is not None else "file",
                str(finding.get("severity")),
                str(finding.get("code")),
                str(finding.get("message")),
                str(finding.get("suggestion")),
            )
        console.print(table)


@files_group.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--purpose", default="fine-tune", show_default=True)
@click.option("--wait/--no-wait", default=True, help="Wait for the pre-flight report.")
@click.option("--timeout", type=float, default=300, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the file and report as JSON.")
@click.option("--url", help="ftq's URL (else OPENAI_BASE_URL or `ftq login`).")
@click.option("--key", help="API key (else OPENAI_API_KEY or `ftq login`).")
@api_errors
def upload(
    path: Path,
    purpose: str,
    wait: bool,
    timeout: float,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Upload a dataset to ftq and show its pre-flight report (exit 1 if it blocks)."""
    client = connection.client(connection.resolve(url, key))
    uploaded = upload_file(client, path, purpose=purpose, show_progress=not as_json)
    answer = wait_for_report(client, uploaded.id, timeout=timeout) if wait else None
    if as_json:
        click.echo(json.dumps({"file": uploaded.model_dump(mode="json"), "validation": answer}))
    else:
        console.print(f"uploaded {uploaded.id} ({uploaded.bytes} bytes, purpose {purpose})")
        if answer is not None:
            print_report(answer)
    if answer is not None and answer.get("verdict") == "block":
        sys.exit(1)
