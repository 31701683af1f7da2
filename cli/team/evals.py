"""``ftq evals list|show``: the team's evals (OpenAI's Evals API) and their runs' results."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from cli.main import main
from cli.team import connection
from cli.team.connection import api_errors, console, json_option, key_option, url_option
from cli.team.connection import when as _when


@main.group()
def evals() -> None:
    """Your team's evals and their runs."""


@evals.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@json_option
@url_option
@key_option
@api_errors
def list_evals(limit: int, as_json: bool, url: str | None, key: str | None) -> None:
    """Evals, newest first."""
    client = connection.client(connection.resolve(url, key))
    rows = [e.model_dump(mode="json") for e in client.evals.list(limit=limit, order="desc").data]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title_justify="left")
    for column in ("eval", "name", "criteria", "created"):
        table.add_column(column, overflow="fold")
    for row in rows:
        criteria = ", ".join(str(c.get("name")) for c in row.get("testing_criteria") or [])
        table.add_row(row["id"], str(row.get("name") or ""), criteria, _when(row.get("created_at")))
    console.print(table)


def _criteria(run: dict[str, Any]) -> str:
    parts = []
    for result in run.get("per_testing_criteria_results") or []:
        total = result["passed"] + result["failed"]
        score = result.get("average_score")
        mean = f" mean {score:.3f}" if isinstance(score, int | float) else ""
        parts.append(f"{result['testing_criteria']} {result['passed']}/{total}{mean}")
    return "; ".join(parts)


@evals.command("show")
@click.argument("eval_id")
@json_option
@url_option
@key_option
@api_errors
def show(eval_id: str, as_json: bool, url: str | None, key: str | None) -> None:
    """An eval and its runs: status, pass/fail counts and each criterion's score."""
    client = connection.client(connection.resolve(url, key))
    record = client.evals.retrieve(eval_id).model_dump(mode="json")
    runs = [r.model_dump(mode="json") for r in client.evals.runs.list(eval_id, limit=100).data]
    if as_json:
        click.echo(json.dumps({"eval": record, "runs": runs}, indent=2))
        return
    console.print(f"[bold]{record['id']}[/] {record.get('name') or ''}")
    table = Table(title_justify="left")
    for column in ("run", "model", "status", "passed", "failed", "errored", "criteria"):
        table.add_column(column, overflow="fold")
    for run in runs:
        counts = run.get("result_counts") or {}
        table.add_row(
            run["id"],
            str(run.get("model") or ""),
            str(run.get("status")),
            str(counts.get("passed", "")),
            str(counts.get("failed", "")),
            str(counts.get("errored", "")),
            _criteria(run),
        )
    console.print(table)
