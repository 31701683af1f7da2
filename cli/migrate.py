"""``ftq models migrate``: re-train every fine-tune that shuts down by a date elsewhere.

The rule: the server's migration plan is the source of truth. A model whose plan item is
``in_progress`` or ``migrated`` (it has a running or finished successor) is skipped, and
each create carries an Idempotency-Key derived from the parent job and the target, so a
second run — or a run retried after a timeout — creates nothing new. Everything goes
through the openai SDK: the plan and lineage with its generic ``get``, the re-train with
``fine_tuning.jobs.create(..., extra_body={"retrain_of": …})``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from cli.team import connection
from cli.team.connection import api_errors, console, errors
from cli.team.models import models

TERMINAL = ("succeeded", "failed", "cancelled")


def _target(value: str | None, suggested: dict[str, str] | None) -> tuple[str, str] | None:
    if value:
        provider, _, model = value.partition(":")
        return provider, model
    if suggested:
        return suggested["provider"], suggested["model"]
    return None


def _idempotency_key(job_id: str, provider: str, model: str) -> str:
    return f"ftq-migrate-{job_id}-{provider}-{model}"[:255]


@models.command("migrate")
@click.option(
    "--before",
    "before",
    required=True,
    help="Migrate models that shut down on or before this date (YYYY-MM-DD).",
)
@click.option(
    "--to",
    "to",
    help="Target as PROVIDER:BASE_MODEL (e.g. local:qwen2.5-7b); default: the operator's "
    "suggested target for each model.",
)
@click.option("--wait/--no-wait", default=False, help="Follow the new jobs until they end.")
@click.option("--dry-run", is_flag=True, help="Show what would be created; create nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--url", help="ftq's URL (else OPENAI_BASE_URL or `ftq login`).")
@click.option("--key", help="API key (else OPENAI_API_KEY or `ftq login`).")
@api_errors
def migrate(
    before: str,
    to: str | None,
    wait: bool,
    dry_run: bool,
    as_json: bool,
    url: str | None,
    key: str | None,
) -> None:
    """Re-train your team's models that shut down by --before on another provider."""
    try:
        deadline = dt.date.fromisoformat(before)
    except ValueError:
        raise click.BadParameter("expected a date like 2027-01-14", param_hint="--before") from None
    if to is not None and (":" not in to or not all(to.partition(":")[::2])):
        raise click.BadParameter("expected PROVIDER:BASE_MODEL", param_hint="--to")
    client = connection.client(connection.resolve(url, key))
    plan: Any = client.get(
        "/migration_plan", cast_to=object, options={"params": {"within_days": 0}}
    )
    today = dt.date.fromisoformat(plan["as_of"])
    within = max(0, (deadline - today).days)
    plan = client.get(
        "/migration_plan", cast_to=object, options={"params": {"within_days": within}}
    )
    items = plan["data"]
    results: list[dict[str, Any]] = []
    say = (lambda *_: None) if as_json else console.print
    say(f"{len(items)} model(s) shut down on or before {deadline.isoformat()}.")
    for index, item in enumerate(items, start=1):
        prefix = f"[{index}/{len(items)}] {item['model']}"
        target = _target(to, item.get("suggested_target"))
        row: dict[str, Any] = {
            "model": item["model"],
            "fine_tuning_job_id": item["fine_tuning_job_id"],
        }
        if item["status"] in ("in_progress", "migrated"):
            successor = item["successors"][-1]
            row.update(action="skipped", reason=item["status"], job=successor["fine_tuning_job_id"])
            say(f"{prefix}: {item['status']} already (job {successor['fine_tuning_job_id']})")
        elif target is None:
            row.update(action="skipped", reason="no_target")
            say(f"{prefix}: no target; pass --to PROVIDER:BASE_MODEL")
        elif dry_run:
            row.update(action="would_create", provider=target[0], model=target[1])
            say(f"{prefix}: would re-train on {target[0]}:{target[1]}")
        else:
            lineage: Any = client.get(f"/models/{item['model']}", cast_to=object)
            job = client.fine_tuning.jobs.create(
                model=target[1],
                training_file=lineage["lineage"]["training_file"]["id"],
                extra_body={"retrain_of": item["fine_tuning_job_id"], "provider": target[0]},
                extra_headers={
                    "Idempotency-Key": _idempotency_key(item["fine_tuning_job_id"], *target)
                },
            )
            row.update(action="created", job=job.id, provider=target[0], model=target[1])
            say(f"{prefix}: re-training on {target[0]}:{target[1]} as job {job.id}")
        results.append(row)
    if wait:
        _follow(client, [r["job"] for r in results if r.get("job")], say)
        for row in results:
            if row.get("job"):
                done = client.fine_tuning.jobs.retrieve(row["job"])
                row.update(status=done.status, fine_tuned_model=done.fine_tuned_model)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    failed = [r for r in results if r.get("status") in ("failed", "cancelled")]
    if failed:
        errors.print(f"{len(failed)} re-training job(s) did not succeed.")
        raise SystemExit(1)


def _follow(client: Any, job_ids: list[str], say: Any, interval: float = 2.0) -> None:
    pending = set(job_ids)
    last: dict[str, str] = {}
    while pending:
        for job_id in sorted(pending):
            job = client.fine_tuning.jobs.retrieve(job_id)
            if last.get(job_id) != job.status:
                say(f"  {job_id}: {job.status}")
                last[job_id] = job.status
            if job.status in TERMINAL:
                pending.discard(job_id)
        if pending:
            time.sleep(interval)
