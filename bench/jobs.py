"""Following many active jobs: ftq's sweeper against a naive poller, in the same run.

    python bench/jobs.py                              # 1,000 jobs, then 10,000 jobs
    python bench/jobs.py --jobs 100                   # one size only
    python bench/jobs.py --jobs 10000 --hour-seconds 1200 --window-seconds 600

A real stack (Postgres, Redis, Celery worker and beat, the API, the sandbox upstream) runs
N jobs that stay active through the measuring window. Figures:

* POST → upstream create: from a team's POST /v1/fine_tuning/jobs to the moment the
  sandbox received the create carrying that job's ftq_job_id (p50, p99), for 20 probe jobs
  created one at a time while the N jobs are active; and, separately, for the burst of N
  jobs created all at once (which measures the workers' throughput, not a user's wait).
* upstream requests per active job-hour: every request ftq sent to the provider during the
  window, divided by jobs x window; then the same for a naive baseline that retrieves each
  job and lists its events every 10 s, on the same jobs, measured right after.
* upstream requests per second (in job time, i.e. the real rate divided by the scale)
  for the N jobs, the figure a provider's rate limit sees.
* lateness: how long after the upstream status changed (the sandbox's own timeline, to the
  sub-second) ftq recorded it (the outbox row of fine_tuning.job.running), in job seconds:
  p50, p99 and worst over every job that started running during the run.

Clocks are scaled (``--hour-seconds``): one "hour" of job life lasts that many real
seconds, and every interval — ftq's poll bounds, the sweep, the baseline's 10 s — is
scaled by the same factor, so the ratios are those of real hours.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import signal
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai

from cli.processes import FOLLOW_QUEUES
from tests.integration.stack import Stack

DATASET = "\n".join(
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Q{i}?"},
                {"role": "assistant", "content": f"A{i}."},
            ]
        }
    )
    for i in range(12)
)


PROBES = 20
PROBE_SPACING_SECONDS = 0.5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def upstream_requests(stack: Stack) -> int:
    """Every /v1 request the sandbox has answered so far (its uncapped counter)."""
    totals = stack.sandbox.stats().get("requests_total", {})
    return sum(count for route, count in totals.items() if " /v1/" in route)


def timeline(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.sandbox_url}/sandbox/timeline", timeout=120) as answer:
        return dict(json.load(answer))


def run(
    n_jobs: int,
    hour_seconds: float,
    window: float,
    baseline_jobs: int,
    submit_concurrency: int = 4,
    api_processes: int = 2,
    baseline_window: float | None = None,
) -> dict[str, Any]:
    scale = hour_seconds / 3600.0
    env = {
        "FTQ_POLL_INTERVAL_MIN_SECONDS": str(15 * scale),
        "FTQ_POLL_INTERVAL_MAX_SECONDS": str(600 * scale),
        "FTQ_SWEEP_INTERVAL_SECONDS": str(max(0.25, 10 * scale)),
        "FTQ_STATUS_CHECK_SECONDS": str(30 * scale),
        "FTQ_LEASE_SECONDS": str(max(5.0, 120 * scale)),
        "FTQ_RECONCILE_INTERVAL_SECONDS": str(max(1.0, 30 * scale)),
        "FTQ_SUBMIT_STALE_SECONDS": str(max(2.0, 60 * scale)),
        "FTQ_MAX_ACTIVE_JOBS_PER_ACCOUNT": str(n_jobs + PROBES + 10),
        "FTQ_MAX_ACTIVE_JOBS_PER_TEAM": str(n_jobs + PROBES + 10),
        "FTQ_LIMITS__MAX_ACTIVE_JOBS": str(n_jobs + PROBES + 10),
        "FTQ_LIMITS__REQUESTS_PER_MINUTE": "1000000",
        "FTQ_LOG_LEVEL": "WARNING",
        # Upstream: a status change a quarter and half an hour in, then running for hours.
        "SANDBOX_JOB_SPEED": "1",
        "SANDBOX_VALIDATING_SECONDS": str(0.25 * hour_seconds),
        "SANDBOX_QUEUED_SECONDS": str(0.25 * hour_seconds),
        "SANDBOX_STEP_SECONDS": str(hour_seconds),
        "SANDBOX_MAX_RUNNING_SECONDS": str(10 * hour_seconds),
        "SANDBOX_STEPS_PER_EPOCH": "10",
    }
    stack = Stack(f"bench{n_jobs}", extra_env=env)
    try:
        # The production layout: polling workers (2 x 2 slots) and a submitter that consumes
        # only the submit and sweep queues.
        stack.start(workers=0, api_processes=api_processes)
        for name in ("worker0", "worker1"):
            stack.start_worker(name, queues=FOLLOW_QUEUES)
        stack.start_submitter("submitter0", concurrency=submit_concurrency)
        team = stack.create_team("bench")
        client = stack.client(team.keys["member"], max_retries=3)
        file_id = client.files.create(
            file=("bench.jsonl", DATASET.encode()), purpose="fine-tune"
        ).id
        # Let the file's report exist first: the bench measures job submission, not validation.
        while client.files.retrieve(file_id).model_extra["validation"]["status"] != "completed":
            time.sleep(0.2)

        posted: dict[str, float] = {}
        lock = threading.Lock()

        def create(_: int) -> None:
            started = time.time()
            job = client.fine_tuning.jobs.create(
                model="gpt-4o-mini-2024-07-18", training_file=file_id
            )
            with lock:
                posted[job.id] = started

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(create, range(n_jobs)))
        posts_done = time.time()

        def created_times() -> dict[str, float]:
            return {job_id: item["created_at"] for job_id, item in timeline(stack).items()}

        deadline = time.time() + max(300, n_jobs / 20)
        while len(created_times()) < n_jobs and time.time() < deadline:
            time.sleep(2.0)
        creates = created_times()
        burst = [creates[j] - posted[j] for j in posted if j in creates]
        burst_started = min(posted.values())
        burst_creates = sorted(creates[j] for j in posted if j in creates)
        burst_seconds = burst_creates[-1] - burst_started
        # The API's share (every POST answered) and the submitters' (creates upstream once
        # the first arrived), told apart: the burst is as slow as the slower of the two.
        post_rate = n_jobs / (posts_done - burst_started)
        drain_rate = (
            (len(burst_creates) - 1) / (burst_creates[-1] - burst_creates[0])
            if len(burst_creates) > 1
            else float("nan")
        )

        # What a team sees while N jobs are active: probe jobs created one at a time.
        probes: dict[str, float] = {}
        for _ in range(PROBES):
            started = time.time()
            probe = client.fine_tuning.jobs.create(
                model="gpt-4o-mini-2024-07-18", training_file=file_id
            )
            probes[probe.id] = started
            time.sleep(PROBE_SPACING_SECONDS)
        deadline = time.time() + 60
        while not set(probes) <= set(created_times()) and time.time() < deadline:
            time.sleep(0.2)
        creates = created_times()
        latencies = [creates[j] - probes[j] for j in probes if j in creates]
        posted.update(probes)

        # The measuring window: following N active jobs from their creation on.
        before = upstream_requests(stack)
        time.sleep(window)
        ftq_requests = upstream_requests(stack) - before

        lateness = measure_lateness(stack, list(posted), scale)
        # ftq's side, printed before the baseline runs (a baseline failure keeps them).
        print(
            json.dumps(
                {
                    "jobs": n_jobs,
                    "ftq_requests": ftq_requests,
                    "probe_latencies_s": sorted(round(v, 3) for v in latencies),
                    "burst_created": len(burst),
                    "burst_seconds": round(burst_seconds, 1),
                    "posts_per_s": round(post_rate, 2),
                    "drain_creates_per_s": round(drain_rate, 2),
                    "lateness_s": [round(v, 1) for v in sorted(lateness)][-20:],
                    "status_changes_seen": len(lateness),
                }
            ),
            flush=True,
        )

        # Baseline on the same upstream jobs, with ftq's followers stopped.
        stack.group.stop("beat")
        for name in ("worker0", "worker1", "submitter0"):
            stack.group.stop(name)
        upstream_ids = [j.id for j in stack.sandbox_client().fine_tuning.jobs.list(limit=100).data]
        # The naive poller's cost per job does not depend on N (every job, every 10 s), so it
        # is measured on a sample small enough for this machine to actually sustain.
        sample = upstream_ids[: min(n_jobs, baseline_jobs)]
        baseline_window = baseline_window or window
        baseline_requests = naive_poller(stack, sample, 10 * scale, baseline_window)

        jobs_hours = n_jobs * window / hour_seconds
        return {
            "jobs": n_jobs,
            "created": len(latencies),
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
            "burst_p50_ms": statistics.median(burst) * 1000 if burst else float("nan"),
            "burst_last_ms": max(burst) * 1000 if burst else float("nan"),
            "burst_creates_per_s": len(burst) / burst_seconds if burst else float("nan"),
            "burst_posts_per_s": post_rate,
            "burst_drain_creates_per_s": drain_rate,
            "ftq_per_job_hour": ftq_requests / jobs_hours,
            "ftq_per_s": ftq_requests / (window / scale),
            "naive_per_job_hour": baseline_requests
            / (len(sample) * baseline_window / hour_seconds),
            "late_p50_s": statistics.median(lateness) if lateness else float("nan"),
            "late_p99_s": percentile(lateness, 0.99) if lateness else float("nan"),
            "late_max_s": max(lateness) if lateness else float("nan"),
            "status_changes_seen": len(lateness),
        }
    finally:
        stack.stop()


def naive_poller(stack: Stack, upstream_ids: list[str], every: float, window: float) -> int:
    count = 0
    lock = threading.Lock()
    stop = time.time() + window

    def follow(upstream_id: str) -> None:
        nonlocal count
        # One client per thread (no shared pool lock); a short timeout so a request the
        # loaded sandbox drops cannot stall the thread past the window.
        sandbox = stack.sandbox_client().with_options(timeout=10)
        next_at = time.time()
        while next_at < stop:
            for call in (
                lambda: sandbox.fine_tuning.jobs.retrieve(upstream_id),
                lambda: sandbox.fine_tuning.jobs.list_events(upstream_id, limit=20),
            ):
                # A request the loaded sandbox dropped was still sent: count it, go on.
                with contextlib.suppress(openai.APIError):
                    call()
            with lock:
                count += 2
            next_at += every
            time.sleep(max(0.0, next_at - time.time()))

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(256, len(upstream_ids))) as pool:
        list(pool.map(follow, upstream_ids))
    return count


def measure_lateness(stack: Stack, job_ids: list[str], scale: float) -> list[float]:
    """For each upstream transition to running: how long (in job seconds) until ftq
    recorded it, from the sandbox's exact time of the change to ftq's outbox row."""
    from sqlmodel import select

    def outbox(session: Any) -> dict[str, float]:
        from service.webhooks.outbox import OutboxEvent

        rows = session.exec(
            select(OutboxEvent).where(OutboxEvent.event_type == "fine_tuning.job.running")
        )
        return {row.object_id: row.created_at.timestamp() for row in rows}

    seen = stack.db(outbox)
    changes = timeline(stack)
    late = []
    for job_id in job_ids:
        started = [
            at
            for status, at in changes.get(job_id, {}).get("status_changes", [])
            if status == "running"
        ]
        if not started or job_id not in seen:
            continue
        late.append(max(0.0, seen[job_id] - started[0]) / scale)
    return late


def main() -> None:
    # A stopped bench still tears its stack down (processes, database, Redis number).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--hour-seconds", type=float, default=360.0)
    parser.add_argument("--window-seconds", type=float, default=None, help="default: one hour")
    parser.add_argument("--baseline-jobs", type=int, default=50)
    parser.add_argument(
        "--baseline-window-seconds",
        type=float,
        default=None,
        help="how long the naive poller runs (default: the window); its cost per job-hour "
        "does not depend on it",
    )
    parser.add_argument(
        "--submit-concurrency", type=int, default=4, help="slots of the submit/sweep worker"
    )
    parser.add_argument(
        "--api-processes", type=int, default=2, help="uvicorn processes (compose runs 2)"
    )
    args = parser.parse_args()
    window = args.window_seconds or args.hour_seconds
    rows = [
        run(
            n,
            args.hour_seconds,
            window,
            args.baseline_jobs,
            args.submit_concurrency,
            args.api_processes,
            args.baseline_window_seconds,
        )
        for n in args.jobs
    ]
    for row in rows:
        ratio = (
            row["naive_per_job_hour"] / row["ftq_per_job_hour"]
            if row["ftq_per_job_hour"]
            else float("inf")
        )
        print(
            f"\nN = {row['jobs']}: POST → upstream create with N active p50 "
            f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms; burst of N: p50 "
            f"{row['burst_p50_ms']:.0f} ms, last {row['burst_last_ms']:.0f} ms, "
            f"{row['burst_creates_per_s']:.1f} creates/s (POSTs answered at "
            f"{row['burst_posts_per_s']:.1f}/s; creates from the first on at "
            f"{row['burst_drain_creates_per_s']:.1f}/s)\n"
            f"  upstream requests: {row['ftq_per_s']:.1f}/s, {row['ftq_per_job_hour']:.2f} per "
            f"active job-hour (naive 10 s poller {row['naive_per_job_hour']:.0f}: "
            f"{ratio:.0f}x fewer)\n"
            f"  status changes seen ({row['status_changes_seen']}): p50 {row['late_p50_s']:.1f} s, "
            f"p99 {row['late_p99_s']:.1f} s, worst {row['late_max_s']:.1f} s late (job time)"
        )
        print(json.dumps(row))


if __name__ == "__main__":
    main()
