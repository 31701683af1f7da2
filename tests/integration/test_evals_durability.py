"""Eval runs as durable work, on a private stack (its worker is killed): a worker SIGKILLed
mid-run is replaced and no finished item's model call is repeated, nor across the hand-offs
between tasks that slice a long run; 429s with Retry-After
are waited out, never recorded as errors; runs through one provider account take turns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from tests.integration.stack import Stack, wait_for

BASE = "gpt-4o-mini-2024-07-18"
CONCURRENCY = 2
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def private() -> Iterator[Stack]:
    stack = Stack(
        "evalkill",
        extra_env={
            "FTQ_EVALS__LEASE_SECONDS": "3",
            "FTQ_EVALS__REQUEUE_SECONDS": "1",
            "FTQ_EVALS__ITEM_CONCURRENCY": str(CONCURRENCY),
            "FTQ_EVALS__MAX_RUNS_PER_ACCOUNT": "1",
            # Every task works two seconds, then hands the run to a fresh task: the killed
            # run crosses hand-offs as well as the kill (the turn-taking runs fit in one).
            "FTQ_EVALS__SLICE_SECONDS": "2",
        },
    )
    try:
        stack.start()
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def _eval(client: OpenAI) -> str:
    return client.evals.create(
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object", "properties": {"question": {"type": "string"}}},
            "include_sample_schema": True,
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "answered",
                "input": "{{sample.output_text}}",
                "reference": "generic",
                "operation": "like",
            }
        ],
    ).id


def _start(client: OpenAI, eval_id: str, count: int, tag: str) -> Any:
    return client.evals.runs.create(
        eval_id,
        data_source={
            "type": "completions",
            "model": BASE,
            "source": {
                "type": "file_content",
                "content": [{"item": {"question": f"{tag} question {i}?"}} for i in range(count)],
            },
            "input_messages": {
                "type": "template",
                "template": [{"role": "user", "content": "{{item.question}}"}],
            },
        },
    )


def _done(client: OpenAI, eval_id: str, run_id: str) -> Any:
    return wait_for(
        lambda: (
            (r := client.evals.runs.retrieve(run_id, eval_id=eval_id)).status == "completed" and r
        ),
        timeout=120,
        what=f"run {run_id}",
    )


def test_killed_worker_resumes_without_recalling_finished_items(private: Stack) -> None:
    stack = private
    team = stack.create_team()
    client = stack.client(team.keys["member"])
    eval_id = _eval(client)
    total = 30
    before = len(stack.sandbox.requests(method="POST", path=CHAT))
    with stack.sandbox.configured(slow_rate=1.0, slow_seconds=0.25, fault_paths="chat/completions"):
        run = _start(client, eval_id, total, "killtest")
        wait_for(
            lambda: client.evals.runs.retrieve(run.id, eval_id=eval_id).result_counts.passed >= 10,
            timeout=60,
            what="10 items graded",
        )
        stack.kill("worker0")
        finished_before = client.evals.runs.retrieve(run.id, eval_id=eval_id).result_counts.passed
        assert finished_before < total
        stack.start_worker("worker1")
        done = _done(client, eval_id, run.id)
    assert done.result_counts.model_dump() == {
        "total": total,
        "passed": total,
        "failed": 0,
        "errored": 0,
    }
    calls = len(stack.sandbox.requests(method="POST", path=CHAT)) - before
    # Every item sampled once; only the items in flight at the kill (one per thread) twice.
    # Re-running finished items would cost `finished_before` (>= 10) extra calls.
    assert total <= calls <= total + CONCURRENCY, (calls, finished_before)
    items = list(client.evals.runs.output_items.list(run.id, eval_id=eval_id))
    assert sorted(i.datasource_item_id for i in items) == list(range(total))


def test_rate_limits_are_waited_out_not_recorded(private: Stack) -> None:
    stack = private
    team = stack.create_team()
    client = stack.client(team.keys["member"])
    eval_id = _eval(client)
    with stack.sandbox.configured(
        error_rate_429=0.4, retry_after_seconds=0.2, fault_paths="chat/completions", fault_seed=3
    ):
        run = _start(client, eval_id, 12, "ratelimited")
        done = _done(client, eval_id, run.id)
    assert done.result_counts.passed == 12 and done.result_counts.errored == 0
    limited = [
        r
        for r in stack.sandbox.requests(method="POST", path=CHAT)
        if r.get("outcome") == "fault_429"
    ]
    assert limited, "the sandbox answered no 429 at all"


def test_runs_through_one_account_take_turns(private: Stack) -> None:
    stack = private
    team = stack.create_team()
    client = stack.client(team.keys["member"])
    eval_id = _eval(client)
    with stack.sandbox.configured(slow_rate=1.0, slow_seconds=0.1, fault_paths="chat/completions"):
        first = _start(client, eval_id, 6, "turn-a")
        second = _start(client, eval_id, 6, "turn-b")
        _done(client, eval_id, first.id)
        _done(client, eval_id, second.id)

    def spans(session: Any) -> list[tuple[Any, Any]]:
        from sqlmodel import select

        from service.evals.models import EvalOutputItem

        result = []
        for run_id in (first.id, second.id):
            times = [
                r.created_at
                for r in session.exec(select(EvalOutputItem).where(EvalOutputItem.run_id == run_id))
            ]
            result.append((min(times), max(times)))
        return result

    (_, a_end), (b_start, _) = sorted(stack.db(spans))
    # FTQ_EVALS__MAX_RUNS_PER_ACCOUNT=1: the second run's items all come after the first's.
    assert a_end <= b_start
