"""Eval throughput: an ftq run against a plain sequential loop, in the same run.

    python bench/evals.py                 # 1,000 items
    python bench/evals.py --items 200     # a smaller run on a busy machine

A real stack (Postgres, Redis, Celery worker and beat, the API, the sandbox upstream) grades
N items: a ``completions`` run sampling the sandbox's base model with a string_check and a
fuzzy-match grader, from POST /v1/evals/{id}/runs to status ``completed`` (every item
committed as its own row). The baseline, measured right after on the same sandbox, is the
loop a team would write: for each item call chat completions through the openai SDK, then
grade in-process, one item after another, nothing stored. The sandbox adds the same fixed
latency to every chat call (``--latency``, default 50 ms) so both sides wait on the
network like they would on a real provider. Figures: items per second for both, and the
ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rapidfuzz import fuzz

from tests.integration.stack import Stack, wait_for

MODEL = "gpt-4o-mini-2024-07-18"
CRITERIA: list[dict[str, Any]] = [
    {
        "type": "string_check",
        "name": "mentions",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "ilike",
    },
    {
        "type": "text_similarity",
        "name": "fuzzy",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "fuzzy_match",
        "pass_threshold": 0.8,
    },
]


def items(n: int) -> list[dict[str, Any]]:
    return [{"item": {"question": f"Question number {i}?", "answer": f"A{i}"}} for i in range(n)]


def ftq_run(stack: Stack, n: int) -> float:
    team = stack.create_team("bench")
    client = stack.client(team.keys["member"], timeout=120)
    eval_id = client.evals.create(
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object", "properties": {"question": {}, "answer": {}}},
            "include_sample_schema": True,
        },
        testing_criteria=CRITERIA,  # type: ignore[arg-type]
    ).id
    started = time.monotonic()
    run = client.evals.runs.create(
        eval_id,
        data_source={
            "type": "completions",
            "model": MODEL,
            "source": {"type": "file_content", "content": items(n)},
            "input_messages": {
                "type": "template",
                "template": [{"role": "user", "content": "{{item.question}}"}],
            },
        },
    )
    done = wait_for(
        lambda: (
            (r := client.evals.runs.retrieve(run.id, eval_id=eval_id)).status == "completed" and r
        ),
        timeout=3600,
        interval=0.5,
        what="the run",
    )
    elapsed = time.monotonic() - started
    assert done.result_counts.total == n
    return elapsed


def baseline(stack: Stack, n: int) -> float:
    sandbox = stack.sandbox_client()
    started = time.monotonic()
    for row in items(n):
        item = row["item"]
        answer = sandbox.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item["question"]}]
        )
        text = answer.choices[0].message.content or ""
        _ = item["answer"].lower() in text.lower(), fuzz.ratio(text, item["answer"]) / 100 >= 0.8
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per chat call")
    args = parser.parse_args()
    stack = Stack("benchevals", extra_env={"FTQ_EVALS__ITEM_CONCURRENCY": "8"})
    try:
        stack.start()
        stack.sandbox.set_config(
            slow_rate=1.0, slow_seconds=args.latency, fault_paths="chat/completions"
        )
        ftq_seconds = ftq_run(stack, args.items)
        loop_seconds = baseline(stack, args.items)
    finally:
        stack.stop()
    ftq_rate, loop_rate = args.items / ftq_seconds, args.items / loop_seconds
    print(f"items: {args.items}, chat latency {args.latency * 1000:.0f} ms")
    print(f"ftq run (stored, resumable): {ftq_rate:8.1f} items/s ({ftq_seconds:.1f} s)")
    print(f"sequential loop (baseline):  {loop_rate:8.1f} items/s ({loop_seconds:.1f} s)")
    print(f"ratio ftq / loop: {ftq_rate / loop_rate:.2f}x")


if __name__ == "__main__":
    main()
