"""``ftq jobs create|follow|list|show|cancel``: a team's fine-tuning jobs from the terminal."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from cli.main import main
from cli.team import connection
from cli.team.connection import api_errors, console, json_option, key_option, url_option
from cli.team.connection import when as _when
from cli.team.follow import follow


def _cost(job: Any) -> str:
    cost = getattr(job, "cost_usd", None)
    if cost is not None:
        return f"${cost:.2f}"
    estimate = getattr(job, "estimated_cost_usd", None)
    return f"~${estimate:.2f}" if estimate is not None else "-"


@main.group()
def jobs() -> None:
    """Create, follow, list and cancel your team's fine-tuning jobs."""


@jobs.command("create")
@click.option("--model", required=True, help="Base model, e.g. gpt-4o-mini-2024-07-18.")
@click.option("--training-file", required=True, help="A file id from `ftq files upload`.")
@click.option("--validation-file", help="A validation file id.")
@click.option("--suffix", help="Up to 64 characters added to the model's name.")
@click.option("--n-epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--learning-rate-multiplier", type=float)
@click.option("--seed", type=int)
@click.option("--provider", help="ftq extension: openai, azure_openai, local ...")
@click.option("--priority", type=int, help="ftq extension: order within your team's queue.")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--follow/--no-follow", "then_follow", default=False, help="Follow it to the end.")
@json_option
@url_option
@key_option
@api_errors
def create(
    model: str,
    training_file: str,
    validation_file: str | None,
    suffix: str | None,
    n_epochs: int | None,
    batch_size: int | None,
    learning_rate_multiplier: float | None,
    seed: int | None,
    provider: str | None,
    priority: int | None,
    metadata: tuple[str, ...],
    then_follow: bool,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Start a fine-tuning job (exits with its outcome when --follow is given)."""
    client = connection.client(connection.resolve(url, key))
    hyper = {
        k: v
        for k, v in {
            "n_epochs": n_epochs,
            "batch_size": batch_size,
            "learning_rate_multiplier": learning_rate_multiplier,
        }.items()
        if v is not None
    }
    pairs = dict(item.split("=", 1) for item in metadata if "=" in item)
    if len(pairs) != len(metadata):
        raise click.BadParameter("use KEY=VALUE", param_hint="--metadata")
    options: dict[str, Any] = {"model": model, "training_file": training_file}
    for name, value in (
        ("validation_file", validation_file),
        ("suffix", suffix),
        ("seed", seed),
        ("metadata", pairs or None),
    ):
        if value is not None:
            options[name] = value
    if hyper:
        options["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    extra = {k: v for k, v in (("provider", provider), ("priority", priority)) if v is not None}
    job = client.fine_tuning.jobs.create(**options, extra_body=extra or None)
    if as_json:
        click.echo(connection.as_json(job))
    else:
        console.print(f"created {job.id}: {job.status} (model {job.model})")
    if then_follow:
        sys.exit(follow(client, job.id, as_json=as_json))


@jobs.command("follow")
@click.argument("job_id")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds per poll.")
@click.option("--timeout", type=float, help="Stop following after this many seconds (exit 4).")
@json_option
@url_option
@key_option
@api_errors
def follow_command(
    job_id: str,
    interval: float,
    timeout: float | None,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Follow a job live; exit 0 succeeded, 1 failed, 3 cancelled, 130 on Ctrl-C."""
    client = connection.client(connection.resolve(url, key))
    sys.exit(follow(client, job_id, interval=interval, timeout=timeout, as_json=as_json))


@jobs.command("list")
@click.option("--status", help="Only jobs in this status.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@json_option
@url_option
@key_option
@api_errors
def list_command(
    status: str | None, limit: int, as_json: bool, url: str | None, key: str | None
) -> None:
    """Your team's jobs, newest first."""
    client = connection.client(connection.resolve(url, key))
    page = client.fine_tuning.jobs.list(limit=limit)
    rows = [j for j in page.data if status is None or j.status == status]
    if as_json:
        click.echo(json.dumps([j.model_dump(mode="json") for j in rows], indent=2))
        return
    table = Table(title_justify="left")
    for column in ("job", "model", "status", "stage", "queue", "provider", "cost", "created"):
        table.add_column(column, overflow="fold")
    for job in rows:
        position = getattr(job, "queue_position", None)
        table.add_row(
            job.id,
            job.fine_tuned_model or job.model,
            job.status,
            str(getattr(job, "stage", "") or ""),
            "" if position is None else str(position),
            str(getattr(job, "provider", "") or ""),
            _cost(job),
            _when(job.created_at),
        )
    console.print(table)


@jobs.command("show")
@click.argument("job_id")
@json_option
@url_option
@key_option
@api_errors
def show(job_id: str, as_json: bool, url: str | None, key: str | None) -> None:
    """One job's fields."""
    job = connection.client(connection.resolve(url, key)).fine_tuning.jobs.retrieve(job_id)
    if as_json:
        click.echo(connection.as_json(job))
        return
    table = Table(show_header=False)
    for name, value in job.model_dump(mode="json").items():
        if value not in (None, [], {}):
            table.add_row(name, json.dumps(value) if isinstance(value, dict | list) else str(value))
    console.print(table)


@jobs.command("cancel")
@click.argument("job_id")
@json_option
@url_option
@key_option
@api_errors
def cancel(job_id: str, as_json: bool, url: str | None, key: str | None) -> None:
    """Cancel a job (locally before submission, at the provider after)."""
    job = connection.client(connection.resolve(url, key)).fine_tuning.jobs.cancel(job_id)
    if as_json:
        click.echo(connection.as_json(job))
    else:
        console.print(f"{job.id}: {job.status} (stage {getattr(job, 'stage', '-')})")
