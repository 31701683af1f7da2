"""``ftq models list``: base models (with shutdown dates) and the team's fine-tunes."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.table import Table

from cli.main import main
from cli.team import connection
from cli.team.connection import api_errors, console


@main.group()
def models() -> None:
    """Models your team can fine-tune or call."""


@models.command("list")
@connection.json_option
@connection.url_option
@connection.key_option
@api_errors
def list_models(as_json: bool, url: str | None, key: str | None) -> None:
    """Every model, with its shutdown date and the days left until it."""
    page = connection.client(connection.resolve(url, key)).models.list()
    rows = [m.model_dump(mode="json") for m in page.data]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    today = dt.datetime.now(dt.UTC).date()
    table = Table(title_justify="left")
    for column in ("model", "owned by", "shutdown", "days left", "job"):
        table.add_column(column, overflow="fold")
    for row in rows:
        shutdown = row.get("shutdown_date")
        left = ""
        if shutdown:
            try:
                left = str((dt.date.fromisoformat(str(shutdown)[:10]) - today).days)
            except ValueError:
                left = "?"
        table.add_row(
            row["id"],
            str(row.get("owned_by", "")),
            str(shutdown or "-"),
            left,
            str(row.get("fine_tuning_job_id") or ""),
        )
    console.print(table)
