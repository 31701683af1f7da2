"""The API under load: 100 concurrent SDK clients, then the same with one team flooding.

    python bench/api.py                        # 100 clients for 60 s, quiet then flooded
    python bench/api.py --api-workers 2        # the API as 2 uvicorn processes
    python bench/api.py --clients 20 --seconds 15

A real stack in the production process layout (the API as docker-compose runs it — one
uvicorn process, or ``--api-workers`` processes behind one port as ``uvicorn --workers``
runs them —, a Celery worker with concurrency 4 and beat, on Postgres and Redis, the
sandbox as upstream). Ten teams, each with a validated file and a few jobs; ``--clients``
closed-loop clients (AsyncOpenAI, no think time) spread over the teams call what SDK users
call most: retrieve a job (40 %), list its events (30 %), list files (20 %), create a job
(10 %). Figures per route: requests/s, p50 and p99; then the same while one more team's key
floods the API with ``--flood-clients`` more clients under a per-key limit of
``--flood-rpm`` requests per minute: the most it had accepted in any 60-s span stays within
that limit and the other teams' p99 is compared with the quiet phase.

The flooder (retrieve a job or list files, no think time, 50 ms after a 429: it does not
honour Retry-After) runs in a process of its own over plain keep-alive HTTP, so that on a
small machine the load generator's own CPU for thousands of refused calls a second is not
charged to the teams being measured; ``--flooder sdk`` runs it as AsyncOpenAI clients in
the measuring process instead (how the first figures were taken).

The API's own CPU (its process group, from /proc) is reported per quiet request and per
flooder request: on a shared machine latencies move with everyone else's load, CPU-seconds
much less.

Baseline, same run: the quiet phase (half of it before the flood, half after, so that load
from elsewhere on the machine drifting during the run weighs on both) is the reference for
the flooded one; ``GET /healthz``
(no auth, no database) measured under the same load shows what the process itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import multiprocessing
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
from openai import AsyncOpenAI

from tests.integration.stack import Stack

TEAMS = 10
JOBS_PER_TEAM = 3
MODEL = "gpt-4o-mini-2024-07-18"
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
).encode()
MIX = (("retrieve job", 0.4), ("list events", 0.3), ("list files", 0.2), ("create job", 0.1))
FLOOD_MIX = (("retrieve job", 0.5), ("list files", 0.5))
FLOOD_PAUSE_AFTER_429 = 0.05


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(stack: Stack, teams: int) -> list[dict[str, Any]]:
    """Teams with a validated file and a few jobs each (created through the SDK)."""
    prepared = []
    for t in range(teams):
        team = stack.create_team(f"api{t}")
        client = stack.client(team.keys["member"], max_retries=3)
        file_id = client.files.create(file=("d.jsonl", DATASET), purpose="fine-tune").id
        deadline = time.time() + 120
        while (client.files.retrieve(file_id).model_extra or {})["validation"][
            "status"
        ] != "completed":
            if time.time() > deadline:
                raise RuntimeError("a file's validation did not finish")
            time.sleep(0.2)
        jobs = [
            client.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id
            for _ in range(JOBS_PER_TEAM)
        ]
        prepared.append({"id": team.id, "key": team.keys["member"], "file": file_id, "jobs": jobs})
    return prepared


async def client_loop(
    api_url: str,
    team: dict[str, Any],
    stop_at: float,
    samples: list[tuple[str, str, float, int]],
    label: str,
    mix: tuple[tuple[str, float], ...] = MIX,
) -> None:
    client = AsyncOpenAI(base_url=f"{api_url}/v1", api_key=team["key"], max_retries=0, timeout=60)
    rng = random.Random()
    names = [name for name, _ in mix]
    weights = [weight for _, weight in mix]
    try:
        while time.time() < stop_at:
            op = rng.choices(names, weights)[0]
            job_id = rng.choice(team["jobs"])
            started = time.perf_counter()
            status = 200
            try:
                if op == "retrieve job":
                    await client.fine_tuning.jobs.retrieve(job_id)
                elif op == "list events":
                    await client.fine_tuning.jobs.list_events(job_id, limit=20)
                elif op == "list files":
                    await client.files.list()
                else:
                    await client.fine_tuning.jobs.create(model=MODEL, training_file=team["file"])
            except openai.APIStatusError as error:
                status = error.status_code
            except openai.APIConnectionError:
                status = 0
            samples.append((label, op, time.perf_counter() - started, status))
            if status == 429:
                await asyncio.sleep(FLOOD_PAUSE_AFTER_429)  # does not honour Retry-After
    finally:
        await client.close()


async def health_loop(api_url: str, stop_at: float, samples: list[float]) -> None:
    import httpx2

    async with httpx2.AsyncClient(timeout=60) as http:
        while time.time() < stop_at:
            started = time.perf_counter()
            await http.get(f"{api_url}/healthz")
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.2)


async def raw_flood_client(
    host: str, port: int, flooder: dict[str, Any], stop_at: float, seen: dict[str, Any]
) -> None:
    """One flooding client over a keep-alive connection: no SDK, little client CPU."""
    rng = random.Random()
    paths = ["/v1/files", *(f"/v1/fine_tuning/jobs/{job}" for job in flooder["jobs"])]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.time() < stop_at:
            path = "/v1/files" if rng.random() < 0.5 else rng.choice(paths[1:])
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {flooder['key']}\r\n\r\n".encode()
            )
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if status == 200:
                seen["accepted"].append(time.time())
            else:
                seen["statuses"][status] = seen["statuses"].get(status, 0) + 1
            if status == 429:
                await asyncio.sleep(FLOOD_PAUSE_AFTER_429)
    finally:
        writer.close()


def flood_process(api_url: str, flooder: dict[str, Any], clients: int, pipe: Any) -> None:
    """The flooder's process: says it is ready (imports done), then floods until the
    ``stop_at`` it is sent and sends back what it saw."""
    url = urlsplit(api_url)
    seen: dict[str, Any] = {"accepted": [], "statuses": {}}
    pipe.send("ready")
    stop_at = pipe.recv()

    async def run_all() -> None:
        host, port = url.hostname or "127.0.0.1", url.port or 80
        await asyncio.gather(
            *(raw_flood_client(host, port, flooder, stop_at, seen) for _ in range(clients))
        )

    asyncio.run(run_all())
    pipe.send(seen)
    pipe.close()


async def phase(
    api_url: str,
    teams: list[dict[str, Any]],
    clients: int,
    seconds: float,
    flooder: dict[str, Any] | None,
    flood_clients: int,
    flooder_kind: str = "process",
) -> tuple[list[tuple[str, str, float, int]], list[float], dict[str, Any]]:
    samples: list[tuple[str, str, float, int]] = []
    health: list[float] = []
    flood: dict[str, Any] = {"accepted": [], "statuses": {}}
    child = None
    if flooder is not None and flooder_kind == "process":
        pipe, child_end = multiprocessing.Pipe()
        child = multiprocessing.get_context("spawn").Process(
            target=flood_process, args=(api_url, flooder, flood_clients, child_end)
        )
        child.start()
        assert await asyncio.to_thread(pipe.recv) == "ready"
    stop_at = time.time() + seconds
    if child is not None:
        pipe.send(stop_at)
    tasks = [
        client_loop(api_url, teams[i % len(teams)], stop_at, samples, "team")
        for i in range(clients)
    ]
    if flooder is not None and flooder_kind == "sdk":
        tasks += [
            client_loop(api_url, flooder, stop_at, samples, "flooder", FLOOD_MIX)
            for _ in range(flood_clients)
        ]
    tasks.append(health_loop(api_url, stop_at, health))
    await asyncio.gather(*tasks)
    if child is not None:
        flood = await asyncio.to_thread(pipe.recv)
        child.join()
    elif flooder is not None:  # the SDK flooder's answers are samples like the teams'
        for label, _op, _latency, status in samples:
            if label != "flooder":
                continue
            if status == 200:
                flood["accepted"].append(0.0)  # no timestamps: counted over the phase only
            else:
                flood["statuses"][status] = flood["statuses"].get(status, 0) + 1
    return samples, health, flood


def most_in_a_window(times: list[float], window: float = 60.0) -> int:
    """The most timestamps found in any span of ``window`` seconds."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0
    )


def summarize(samples: list[tuple[str, str, float, int]], seconds: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, _ in MIX:
        latencies = [lat for label, op, lat, status in samples if op == name and label == "team"]
        ok = [
            lat
            for label, op, lat, status in samples
            if op == name and label == "team" and status == 200
        ]
        rows[name] = {
            "requests": len(latencies),
            "ok": len(ok),
            "per_s": len(latencies) / seconds,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
        }
    every = [lat for label, _op, lat, _status in samples if label == "team"]
    rows["all"] = {
        "requests": len(every),
        "per_s": len(every) / seconds,
        "p50_ms": statistics.median(every) * 1000 if every else float("nan"),
        "p99_ms": percentile(every, 0.99) * 1000 if every else float("nan"),
        "errors": sum(
            1 for label, _op, _lat, status in samples if label == "team" and status != 200
        ),
    }
    return rows


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # pgrp; utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def start(stack: Stack, api_workers: int) -> None:
    """Stack.start's layout with the API run as ``api_workers`` uvicorn processes."""
    stack.start(workers=0, api_processes=api_workers)
    stack.start_worker("worker0", concurrency=4)


def run(
    clients: int,
    seconds: float,
    flood_clients: int,
    flood_rpm: int,
    api_workers: int = 1,
    flooder_kind: str = "process",
) -> dict[str, Any]:
    env = {
        "FTQ_LOG_LEVEL": "WARNING",
        "FTQ_SWEEP_INTERVAL_SECONDS": "10",
        "FTQ_POLL_INTERVAL_MIN_SECONDS": "15",
        "FTQ_POLL_INTERVAL_MAX_SECONDS": "600",
        "FTQ_LEASE_SECONDS": "120",
        "FTQ_SUBMIT_STALE_SECONDS": "60",
        "FTQ_RECONCILE_INTERVAL_SECONDS": "30",
        # Creates must not hit the quota or the fair queue's slots during the run.
        "FTQ_LIMITS__MAX_ACTIVE_JOBS": "100000",
        "FTQ_MAX_ACTIVE_JOBS_PER_TEAM": "100000",
        "FTQ_MAX_ACTIVE_JOBS_PER_ACCOUNT": "100000",
        "FTQ_LIMITS__REQUESTS_PER_MINUTE": "1000000",
        "SANDBOX_JOB_SPEED": "0.01",  # jobs stay active: retrieves and events stay realistic
    }
    stack = Stack("benchapi", extra_env=env)
    try:
        start(stack, api_workers)
        teams = prepare(stack, TEAMS)
        flooder = prepare(stack, 1)[0]

        def limit(session: Any) -> None:
            from service.tenants import limits

            limits.set_overrides(session, flooder["id"], {"requests_per_minute": flood_rpm})

        stack.db(limit)
        # Half the quiet phase before the flood, half after: other load on the machine that
        # drifts during the run weighs on the baseline as on the flooded phase.
        api_group = stack.group.children["api"].pid  # its own session: uvicorn and workers
        cpu = [group_cpu_seconds(api_group)]
        before, before_health, _ = asyncio.run(
            phase(stack.api_url, teams, clients, seconds / 2, None, 0)
        )
        cpu.append(group_cpu_seconds(api_group))
        flooded, flooded_health, flood = asyncio.run(
            phase(stack.api_url, teams, clients, seconds, flooder, flood_clients, flooder_kind)
        )
        cpu.append(group_cpu_seconds(api_group))
        after, after_health, _ = asyncio.run(
            phase(stack.api_url, teams, clients, seconds / 2, None, 0)
        )
        cpu.append(group_cpu_seconds(api_group))
        quiet, quiet_health = before + after, before_health + after_health
        accepted = flood["accepted"]
        # CPU the API spent, which the machine's other load does not inflate the way it
        # inflates latencies: per quiet request, and per flooder request once the others'
        # requests in the flooded phase are charged at the quiet rate.
        quiet_cpu = (cpu[1] - cpu[0]) + (cpu[3] - cpu[2])
        per_request = quiet_cpu / max(1, len(quiet))
        others_flooded = sum(1 for label, *_rest in flooded if label == "team")
        flood_requests = len(accepted) + sum(flood["statuses"].values())
        flood_cpu = (cpu[2] - cpu[1]) - others_flooded * per_request
        return {
            "layout": {"api_workers": api_workers, "flooder": flooder_kind},
            "api_cpu": {
                "quiet_ms_per_request": per_request * 1000,
                "flooded_phase_s": cpu[2] - cpu[1],
                "quiet_phase_s": quiet_cpu,
                "ms_per_flooder_request": flood_cpu / max(1, flood_requests) * 1000,
            },
            "quiet_halves_p99_ms": [
                summarize(before, seconds / 2)["all"]["p99_ms"],
                summarize(after, seconds / 2)["all"]["p99_ms"],
            ],
            "quiet": summarize(quiet, seconds),
            "flooded": summarize(flooded, seconds),
            "health_p99_ms": {
                "quiet": percentile(quiet_health, 0.99) * 1000 if quiet_health else None,
                "flooded": percentile(flooded_health, 0.99) * 1000 if flooded_health else None,
            },
            "flooder": {
                "accepted": len(accepted),
                "refused_429": flood["statuses"].get(429, 0),
                "other_statuses": {k: v for k, v in flood["statuses"].items() if k != 429},
                "requests_per_s": (len(accepted) + sum(flood["statuses"].values())) / seconds,
                "accepted_per_minute": len(accepted) / (seconds / 60),
                "most_accepted_in_60s": most_in_a_window(accepted)
                if flooder_kind == "process"
                else None,
                "limit_per_minute": flood_rpm,
            },
        }
    finally:
        stack.stop()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--flood-clients", type=int, default=50)
    parser.add_argument("--flood-rpm", type=int, default=600)
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn --workers")
    parser.add_argument("--flooder", choices=("process", "sdk"), default="process")
    args = parser.parse_args()
    result = run(
        args.clients,
        args.seconds,
        args.flood_clients,
        args.flood_rpm,
        args.api_workers,
        args.flooder,
    )
    print(f"layout: {args.api_workers} API process(es), flooder: {args.flooder}")
    cpu = result["api_cpu"]
    print(
        f"API CPU: {cpu['quiet_ms_per_request']:.2f} ms per quiet request; "
        f"{cpu['ms_per_flooder_request']:.2f} ms per flooder request"
    )
    halves = result["quiet_halves_p99_ms"]
    print(f"quiet p99 before the flood {halves[0]:.0f} ms, after it {halves[1]:.0f} ms")
    for name in ("quiet", "flooded"):
        print(f"{name}:")
        for route, row in result[name].items():
            print(
                f"  {route:>13}: {row['per_s']:7.1f} req/s  p50 {row['p50_ms']:7.0f} ms  "
                f"p99 {row['p99_ms']:7.0f} ms"
            )
    quiet_p99, flooded_p99 = result["quiet"]["all"]["p99_ms"], result["flooded"]["all"]["p99_ms"]
    flooder = result["flooder"]
    print(
        f"others' p99 flooded / quiet: {flooded_p99 / quiet_p99:.2f}x; flooder accepted "
        f"{flooder['accepted_per_minute']:.0f}/min, at most {flooder['most_accepted_in_60s']} "
        f"in any 60 s (limit {flooder['limit_per_minute']}/min), "
        f"{flooder['refused_429']} answered 429 ({flooder['requests_per_s']:.0f} req/s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
