"""Running an eval run: durable, resumable, cancellable, polite to the provider.

One task holds a run's lease (compare-and-set on ``lease_owner``/``lease_expires_at``,
renewed by a heartbeat while it works). It skips every item that already has an output
row, samples and grades the rest a few at a time, and commits each item's row the moment it
is graded — so a worker killed mid-run is replaced (by the reconciler, once the lease lapses)
by one that never calls the model again for a finished item. Before each item a thread
re-reads the run's status: a cancel stops the run within one item per thread. A 429 waits
for the provider's Retry-After (short ones in place; long ones release the run with
``not_before`` and the task retries then). Runs sampling through one provider account are
limited to ``max_runs_per_account`` at a time; the others wait their turn.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import threading
import time
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service import ids, leases
from service.config import get_settings
from service.db import session_scope, utcnow
from service.dispatch import enqueue
from service.evals import graders, templates
from service.evals.calls import ModelCalls, RateLimitedLater
from service.evals.models import (
    TERMINAL_RUN_STATUSES,
    Eval,
    EvalOutputItem,
    EvalRun,
    RunStatus,
)
from service.evals.service import RUN_TASK, SAMPLING_KEYS, summarize
from service.evals.templating import TemplateError, resolve
from service.providers.base import ProviderError

log = structlog.get_logger(__name__)


class RetryLater(Exception):
    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


def _claim(run_id: str, owner: str) -> EvalRun | None:
    settings = get_settings().evals
    with session_scope() as session:
        run = session.get(EvalRun, run_id)
        if run is None or run.status in TERMINAL_RUN_STATUSES or run.deleted_at is not None:
            return None
        now = utcnow()
        not_before = run.not_before
        if not_before is not None:
            if not_before.tzinfo is None:
                not_before = not_before.replace(tzinfo=dt.UTC)
            if not_before > now:
                raise RetryLater((not_before - now).total_seconds(), "waiting for Retry-After")
        if run.account:
            if session.get_bind().dialect.name == "postgresql":
                # Serialise claims per account, so two workers cannot both take the last slot.
                session.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"evals:{run.account}"},
                )
            busy = session.exec(
                select(sa.func.count())
                .select_from(EvalRun)
                .where(
                    EvalRun.account == run.account,
                    EvalRun.id != run.id,
                    EvalRun.status == RunStatus.in_progress,
                    col(EvalRun.lease_expires_at) > now,
                )
            ).one()
            if busy >= settings.max_runs_per_account:
                raise RetryLater(2.0, "provider account at its eval concurrency limit")
        taken = leases.claim(
            session,
            EvalRun,
            run_id,
            owner,
            settings.lease_seconds,
            where=(col(EvalRun.status).in_([RunStatus.queued, RunStatus.in_progress]),),
            steal_from=owner,
            values={
                "status": RunStatus.in_progress,
                "not_before": None,
                "attempts": EvalRun.attempts + 1,
                "updated_at": now,
            },
        )
        if not taken:
            return None
    with session_scope() as session:
        return session.get(EvalRun, run_id)


def _release(run_id: str, owner: str, **values: Any) -> None:
    with session_scope() as session:
        leases.release(session, EvalRun, run_id, owner, updated_at=utcnow(), **values)


def _sample_namespace(sample: dict[str, Any]) -> dict[str, Any]:
    text = sample.get("output_text", "")
    try:
        output_json = json.loads(text) if text else None
    except ValueError:
        output_json = None
    return {**sample, "output_text": text, "output_json": output_json}


def _messages(run: EvalRun, item: dict[str, Any]) -> list[dict[str, Any]]:
    spec = run.data_source["input_messages"]
    if spec["type"] == "item_reference":
        value = resolve("{{" + spec["item_reference"] + "}}", {"item": item})
        return [
            {"role": m["role"], "content": m.get("content") or ""}
            for m in value
            if isinstance(m, dict) and isinstance(m.get("role"), str)
        ]
    return graders.render_messages(spec["template"], {"item": item})


def _sample(run: EvalRun, item: dict[str, Any], calls: ModelCalls) -> dict[str, Any]:
    assert run.model is not None
    messages = _messages(run, item)
    sampling = run.data_source.get("sampling_params") or {}
    params = {k: v for k, v in sampling.items() if k in SAMPLING_KEYS and v is not None}
    response = calls.chat(run.model, messages, params)
    choice = (response.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    usage = response.get("usage") or {}
    return {
        "model": run.model,
        "input": [
            {"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else ""}
            for m in messages
        ],
        "output": [{"role": "assistant", "content": text}],
        "output_text": text,
        "choices": response.get("choices") or [],
        "finish_reason": choice.get("finish_reason") or "",
        "usage": {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "total_tokens": int(usage.get("total_tokens") or 0),
            "cached_tokens": 0,
        },
        "error": None,
        "temperature": float(params.get("temperature", 1.0)),
        "top_p": float(params.get("top_p", 1.0)),
        "seed": int(params.get("seed") or 0),
        "max_completion_tokens": int(params.get("max_completion_tokens") or 0),
    }


class _Execution:
    def __init__(self, run: EvalRun, record: Eval, owner: str) -> None:
        self.run, self.record, self.owner = run, record, owner
        self.calls = ModelCalls(run.team_id)
        self.settings = get_settings().evals
        self.stop = threading.Event()
        self.retry_after: float | None = None
        budget = min(self.settings.slice_seconds, get_settings().task_time_limit_seconds - 60)
        self.deadline = time.monotonic() + max(1.0, budget)

    def _still_running(self) -> bool:
        """May this thread start another item?"""
        if self.stop.is_set():
            return False
        if time.monotonic() > self.deadline:
            self.stop.set()  # this task's slice is over: _finish hands the rest on
            return False
        return self._still_ours()

    def _still_ours(self) -> bool:
        """Is the run still in progress under our lease (not canceled, deleted or taken)?"""
        with session_scope() as session:
            row = session.execute(
                sa.select(EvalRun.status, EvalRun.lease_owner, EvalRun.deleted_at).where(  # type: ignore[call-overload]
                    EvalRun.id == self.run.id
                )
            ).first()
        if row is None or row[0] != RunStatus.in_progress or row[1] != self.owner or row[2]:
            self.stop.set()
            return False
        return True

    def grade_item(self, index: int) -> None:
        if not self._still_running():
            return
        row = self.run.items[index]
        item, given = row["item"], row.get("sample")
        attempts = self.settings.max_item_attempts
        sample: dict[str, Any] | None = None
        results: list[dict[str, Any]] = []
        status = "error"
        for attempt in range(attempts):
            try:
                if self.run.model:
                    sample = _sample(self.run, item, self.calls)
                elif given is not None:
                    sample = given
                namespace = _sample_namespace(sample) if sample is not None else None
                graded = [
                    graders.grade(spec, item, namespace, self.calls)
                    for spec in self.record.testing_criteria
                ]
                results = [g.as_result() for g in graded]
                if any(g.error for g in graded):
                    status = "error"
                else:
                    status = "pass" if all(g.passed for g in graded) else "fail"
                break
            except RateLimitedLater as limited:
                if limited.seconds > self.settings.max_inline_retry_seconds:
                    self.retry_after = limited.seconds
                    self.stop.set()
                    return
                time.sleep(limited.seconds)
            except ProviderError as error:
                if error.retryable and attempt + 1 < attempts:
                    time.sleep(min(8.0, 0.5 * 2**attempt))
                    continue
                sample = {
                    **(sample or {}),
                    "model": self.run.model or "",
                    "error": {"code": error.code or "provider_error", "message": error.message},
                }
                break
            except TemplateError as error:
                sample = {"error": {"code": "invalid_template", "message": str(error)}}
                break
            except (graders.GraderFailure, LookupError) as error:
                # The model is no longer reachable for this team (deleted, credentials gone).
                sample = {
                    "model": self.run.model or "",
                    "error": {"code": "model_unavailable", "message": str(error)},
                }
                break
        else:
            self.retry_after = self.settings.default_retry_after_seconds
            self.stop.set()
            return
        if not self._still_ours():
            return  # canceled while this item was in flight: its result is not recorded
        self._commit(index, item, status, results, sample)

    def _commit(
        self,
        index: int,
        item: dict[str, Any],
        status: str,
        results: list[dict[str, Any]],
        sample: dict[str, Any] | None,
    ) -> None:
        stored = None
        if sample:
            # The output item's sample in OpenAI's shape: messages out, not the raw choices.
            stored = {
                k: v
                for k, v in sample.items()
                if k not in ("choices", "output_text", "output_json")
            }
            if "output" not in stored and isinstance(sample.get("output_text"), str):
                stored["output"] = [{"role": "assistant", "content": sample["output_text"]}]
        try:
            with session_scope() as session:
                session.add(
                    EvalOutputItem(
                        id=ids.new_id("outputitem_"),
                        run_id=self.run.id,
                        eval_id=self.run.eval_id,
                        team_id=self.run.team_id,
                        datasource_item_id=index,
                        datasource_item=item,
                        status=status,
                        results=results,
                        sample=stored,
                    )
                )
        except IntegrityError:
            pass  # another worker recorded this item first (a lease that lapsed mid-item)


def _done_indices(session: Session, run_id: str) -> set[int]:
    return set(
        session.exec(
            select(EvalOutputItem.datasource_item_id).where(EvalOutputItem.run_id == run_id)
        )
    )


def execute(run_id: str, owner: str) -> None:
    """Work on the run until it is finished, canceled, or must wait (RetryLater)."""
    run = _claim(run_id, owner)
    if run is None:
        return
    with session_scope() as session:
        record = session.get(Eval, run.eval_id)
        done = _done_indices(session, run.id)
    assert record is not None
    execution = _Execution(run, record, owner)
    pending = [i for i in range(len(run.items)) if i not in done]
    log.info("eval_run_started", run_id=run.id, pending=len(pending), done=len(done))
    seconds = execution.settings.lease_seconds
    with (
        leases.Heartbeat(EvalRun, run.id, owner, seconds=seconds, every=seconds / 3) as heartbeat,
        concurrent.futures.ThreadPoolExecutor(
            max_workers=execution.settings.item_concurrency, thread_name_prefix="eval-item"
        ) as pool,
    ):
        for future in [pool.submit(execution.grade_item, i) for i in pending]:
            future.result()
            if heartbeat.lost.is_set():
                execution.stop.set()
    if heartbeat.lost.is_set():
        return  # another worker holds the run now
    if execution.retry_after is not None:
        wait = execution.retry_after
        _release(run.id, owner, not_before=utcnow() + dt.timedelta(seconds=wait))
        raise RetryLater(wait, "provider rate limit")
    _finish(run.id, owner)


def _finish(run_id: str, owner: str) -> None:
    with session_scope() as session:
        run = session.exec(select(EvalRun).where(EvalRun.id == run_id).with_for_update()).first()
        if run is None or run.lease_owner != owner:
            return
        record = session.get(Eval, run.eval_id)
        assert record is not None
        rows = list(session.exec(select(EvalOutputItem).where(EvalOutputItem.run_id == run.id)))
        summary = summarize(record, run, [(r.status, r.results, r.sample) for r in rows])
        run.cost_usd = summary["cost_usd"]
        leases.clear(run)
        run.updated_at = utcnow()
        if run.status == RunStatus.in_progress:
            if len(rows) < run.total_items:
                # Items were skipped (a stop without a reason): the next task finishes them.
                enqueue(RUN_TASK, run.id)
            else:
                run.status = RunStatus.completed
                run.finished_at = utcnow()
                run.metrics = templates.run_metrics(record, rows)
        session.add(run)
        if run.gate_job_id and run.status in TERMINAL_RUN_STATUSES:
            enqueue("evals.gate", run.gate_job_id)
        log.info("eval_run_finished", run_id=run.id, status=run.status, items=len(rows))


def reconcile() -> list[str]:
    """Runs whose worker died (lease lapsed) or whose message was lost: enqueue again."""
    settings = get_settings().evals
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.requeue_seconds)
    with session_scope() as session:
        runs = list(
            session.exec(
                select(EvalRun.id).where(
                    col(EvalRun.status).in_([RunStatus.queued, RunStatus.in_progress]),
                    col(EvalRun.deleted_at).is_(None),
                    leases.not_leased(EvalRun, now),
                    sa.or_(col(EvalRun.not_before).is_(None), col(EvalRun.not_before) <= now),
                    col(EvalRun.updated_at) < stale,
                )
            )
        )
        for run_id in runs:
            # Touch it so a queued run is not re-sent on every beat while its message waits.
            session.execute(
                sa.update(EvalRun).where(col(EvalRun.id) == run_id).values(updated_at=now)
            )
            enqueue(RUN_TASK, run_id)
    return runs
