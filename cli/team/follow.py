"""Following a job until it ends: status, stage, queue position, steps, loss, checkpoints.

``JobWatch`` is the state (what was seen so far) and is fed by ``poll``; ``follow`` draws it
with rich while the job runs and returns the exit status of its outcome: 0 succeeded,
1 failed, 3 cancelled. Ctrl-C stops following only; the job keeps running.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from cli.team.connection import console

TERMINAL = ("succeeded", "failed", "cancelled")
OUTCOME_EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3}
INTERRUPTED_EXIT = 130
TIMED_OUT_EXIT = 4
SPARK = "▁▂▃▄▅▆▇█"
PAGE = 100


def sparkline(values: list[float], width: int = 48) -> str:
    """The last ``width`` values as block characters, scaled between their min and max."""
    tail = values[-width:]
    if not tail:
        return ""
    low, high = min(tail), max(tail)
    span = (high - low) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in tail)


@dataclass
class JobWatch:
    job_id: str
    job: Any = None
    newest_event: str | None = None
    losses: list[float] = field(default_factory=list)
    step: int = 0
    total_steps: int | None = None
    checkpoints: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.job.status) if self.job is not None else "unknown"

    def extra(self, name: str) -> Any:
        return getattr(self.job, name, None) if self.job is not None else None


def _new_events(client: Any, watch: JobWatch) -> list[Any]:
    """Events newer than the newest seen, oldest first (the API pages newest first)."""
    newer: list[Any] = []
    after: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE}
        if after:
            kwargs["after"] = after
        page = client.fine_tuning.jobs.list_events(watch.job_id, **kwargs)
        for event in page.data:
            if event.id == watch.newest_event:
                return list(reversed(newer))
            newer.append(event)
        if not page.has_more or not page.data:
            return list(reversed(newer))
        after = page.data[-1].id


def poll(client: Any, watch: JobWatch) -> tuple[list[Any], list[Any], str | None]:
    """Refresh ``watch``: (new events, new checkpoints, previous status)."""
    previous = watch.status if watch.job is not None else None
    watch.job = client.fine_tuning.jobs.retrieve(watch.job_id)
    events = _new_events(client, watch)
    if events:
        watch.newest_event = events[-1].id
    for event in events:
        data = getattr(event, "data", None) or {}
        if getattr(event, "type", None) == "metrics" and isinstance(data, dict):
            if isinstance(data.get("step"), int):
                watch.step = max(watch.step, data["step"])
            if isinstance(data.get("total_steps"), int):
                watch.total_steps = data["total_steps"]
            if isinstance(data.get("train_loss"), int | float):
                watch.losses.append(float(data["train_loss"]))
    fresh = []
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(watch.job_id, limit=PAGE).data:
        if checkpoint.id not in watch.checkpoints:
            watch.checkpoints[checkpoint.id] = checkpoint
            fresh.append(checkpoint)
    return events, sorted(fresh, key=lambda c: c.step_number), previous


def _header(watch: JobWatch) -> Text:
    position = watch.extra("queue_position")
    line = Text()
    line.append(f"{watch.job_id}  ", style="bold")
    line.append(
        watch.status, style={"succeeded": "green", "failed": "red"}.get(watch.status, "cyan")
    )
    line.append(f"  stage {watch.extra('stage') or '-'}")
    if position is not None:
        line.append(f"  queue position {position}")
    if watch.losses:
        line.append(f"  loss {watch.losses[-1]:.4f}")
    return line


def follow(
    client: Any,
    job_id: str,
    *,
    interval: float = 1.0,
    timeout: float | None = None,
    as_json: bool = False,
) -> int:
    """Follow ``job_id`` until it ends; the exit status of its outcome."""
    watch = JobWatch(job_id)
    bar = Progress(
        TextColumn("steps"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    )
    task = bar.add_task("steps", total=None)
    deadline = time.monotonic() + timeout if timeout else None

    def view() -> Group:
        bar.update(task, completed=watch.step, total=watch.total_steps)
        spark = Text(f"loss {sparkline(watch.losses)}") if watch.losses else Text("")
        return Group(_header(watch), bar, spark)

    live = Live(view(), console=console, refresh_per_second=4, transient=True)
    try:
        # The live view (and its refresh thread) only on a terminal: piped into a log or a
        # CI job, follow prints plain lines, and Ctrl-C never meets a second thread.
        if not as_json and console.is_terminal:
            live.start()
        while True:
            events, fresh, previous = poll(client, watch)
            _report(watch, events, fresh, previous, as_json, live)
            if not as_json:
                live.update(view())
            if watch.status in TERMINAL:
                break
            if deadline and time.monotonic() > deadline:
                live.stop()
                console.print(f"still {watch.status} after {timeout:.0f}s; stopped following")
                return TIMED_OUT_EXIT
            time.sleep(interval)
    except KeyboardInterrupt:
        live.stop()
        console.print(
            f"stopped following; {job_id} keeps running (ftq jobs follow {job_id} to resume, "
            f"ftq jobs cancel {job_id} to stop it)"
        )
        return INTERRUPTED_EXIT
    finally:
        live.stop()
    _finish(watch, as_json)
    return OUTCOME_EXIT.get(watch.status, 1)


def _report(
    watch: JobWatch,
    events: list[Any],
    fresh: list[Any],
    previous: str | None,
    as_json: bool,
    live: Live,
) -> None:
    if as_json:
        if watch.status != previous:
            click.echo(
                json.dumps(
                    {
                        "type": "status",
                        "status": watch.status,
                        "stage": watch.extra("stage"),
                        "queue_position": watch.extra("queue_position"),
                    }
                )
            )
        for event in events:
            click.echo(json.dumps({"type": "event", "event": event.model_dump(mode="json")}))
        for checkpoint in fresh:
            click.echo(
                json.dumps({"type": "checkpoint", "checkpoint": checkpoint.model_dump(mode="json")})
            )
        return
    if watch.status != previous:
        position = watch.extra("queue_position")
        where = f" (queue position {position})" if position is not None else ""
        live.console.print(f"status: {watch.status}, stage {watch.extra('stage')}{where}")
    for checkpoint in fresh:
        loss = checkpoint.metrics.train_loss if checkpoint.metrics else None
        shown = f", train loss {loss:.4f}" if isinstance(loss, int | float) else ""
        live.console.print(
            f"checkpoint at step {checkpoint.step_number}: "
            f"{checkpoint.fine_tuned_model_checkpoint}{shown}"
        )


def _finish(watch: JobWatch, as_json: bool) -> None:
    job = watch.job
    if as_json:
        click.echo(json.dumps({"type": "job", "job": job.model_dump(mode="json")}))
        return
    if watch.losses:
        console.print(f"loss {sparkline(watch.losses)} {watch.losses[-1]:.4f}")
    if job.status == "succeeded":
        console.print(
            f"[green]succeeded[/]: {job.fine_tuned_model} "
            f"({job.trained_tokens} trained tokens, {watch.step} steps)"
        )
    elif job.status == "failed":
        error = job.error
        code = getattr(error, "code", None)
        message = getattr(error, "message", None)
        console.print(f"[red]failed[/]: {code}: {message}")
    else:
        console.print(f"[yellow]{job.status}[/]")
