"""Webhook delivery latency and throughput: ftq's outbox pipeline against a plain loop.

    python bench/webhooks.py                       # 1,000 state changes x 10 endpoints each
    python bench/webhooks.py --events 200 --rate 100

A real stack (Postgres, Redis, the API, beat at the production sweep interval and two Celery
worker processes) with 10 teams of 10 endpoints each (100 endpoints) pointing at a local
receiver. The bench commits state changes (outbox rows, one transaction each, as a job's
status change writes them) at ``--rate`` deliveries per second — each change goes to its
team's 10 endpoints — and the receiver records when each delivery arrives. Figures:

* latency from the commit of the state change to the receipt: p50, p99, max;
* sustained deliveries/s: deliveries received / (last receipt - first commit);
* the same with one endpoint down for the whole phase (``--down refused``: connection
  refused; ``--down hang``: accepts and never answers, so each attempt takes the whole
  timeout): the figures of the other 99 endpoints;
* baseline, same run: a plain loop that signs and POSTs the same deliveries synchronously,
  one after another, over one keep-alive connection (deliveries/s).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.processes import free_port
from tests.integration.stack import Stack

TEAMS = 10
ENDPOINTS_PER_TEAM = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Receiver:
    """A threaded HTTP server that answers 200 at once and notes what arrived when."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, str]] = []  # (time, path, event id)
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                try:
                    event_id = json.loads(body)["id"]
                except (ValueError, KeyError):
                    event_id = ""
                with receiver._lock:
                    receiver.received.append((at, self.path, event_id))

            def log_message(self, *_: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            # A web server's usual accept backlog (nginx: 511); the default of 5 turns a
            # few dozen concurrent senders into SYN retries of a second each.
            request_queue_size = 511

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def since(self, start: int) -> list[tuple[float, str, str]]:
        with self._lock:
            return self.received[start:]


def setup(stack: Stack, receiver: Receiver) -> list[tuple[str, list[tuple[str, str]]]]:
    """10 teams of 10 endpoints; returns (team id, [(endpoint id, path)])."""
    from service.webhooks import service as webhooks

    teams = []
    for t in range(TEAMS):
        team = stack.create_team(f"wh{t}")
        endpoints = []
        for e in range(ENDPOINTS_PER_TEAM):
            path = f"/t{t}/e{e}"

            def make(session: Any, path: str = path, team_id: str = team.id) -> str:
                endpoint, _secret = webhooks.create_endpoint(
                    session, team_id, url=f"{receiver.url}{path}"
                )
                return endpoint.id

            endpoints.append((stack.db(make), path))
        teams.append((team.id, endpoints))
    return teams


def commit_changes(
    stack: Stack,
    teams: list[tuple[str, Any]],
    events: int,
    rate: float,
    tag: str,
    per_commit: int = 1,
) -> dict[str, tuple[float, int]]:
    """Commit ``events`` state changes, ``per_commit`` to a transaction, paced so
    deliveries arrive at ``rate`` per second; returns {outbox event id: (commit time, team
    index)}."""
    from service.db import session_scope
    from service.webhooks.outbox import record_event

    committed: dict[str, tuple[float, int]] = {}
    per_second = rate / ENDPOINTS_PER_TEAM if rate > 0 else float("inf")
    start = time.time()
    for first in range(0, events, per_commit):
        due = start + first / per_second
        if due > time.time():
            time.sleep(due - time.time())
        written: list[tuple[str, int]] = []
        with session_scope() as session:
            for i in range(first, min(events, first + per_commit)):
                team_index = i % len(teams)
                job_id = f"ftjob-{tag}{i:06d}"
                event = record_event(
                    session,
                    team_id=teams[team_index][0],
                    event_type="fine_tuning.job.running",
                    object_id=job_id,
                    sequence=1,
                    data={"id": job_id, "object": "fine_tuning.job", "status": "running"},
                )
                written.append((event.id, team_index))
        at = time.time()
        for event_id, team_index in written:
            committed[event_id] = (at, team_index)
    return committed


def fanned_out_at(stack: Stack, committed: dict[str, tuple[float, int]]) -> float:
    """When the last delivery row of these state changes was written (fan-out done)."""
    import sqlalchemy as sa

    from service.webhooks.models import WebhookDelivery

    ids = list(committed)
    return float(
        stack.db(
            lambda session: (
                session.execute(
                    sa.select(sa.func.max(WebhookDelivery.created_at)).where(
                        WebhookDelivery.outbox_event_id.in_(ids)  # type: ignore[union-attr]
                    )
                )
                .scalar_one()
                .timestamp()
            )
        )
    )


def measure(
    stack: Stack,
    receiver: Receiver,
    first: int,
    committed: dict[str, tuple[float, int]],
    expected: int,
    timeout: float,
    skip_path: str | None = None,
) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        arrived = [r for r in receiver.since(first) if r[2] in committed and r[1] != skip_path]
        if len(arrived) >= expected:
            break
        time.sleep(0.5)
    arrived = [r for r in receiver.since(first) if r[2] in committed and r[1] != skip_path]
    latencies = [at - committed[event_id][0] for at, _path, event_id in arrived]
    first_commit = min(at for at, _ in committed.values())
    last = max(at for at, _path, _id in arrived) if arrived else first_commit
    return {
        "expected": expected,
        "delivered": len(arrived),
        "p50_s": statistics.median(latencies) if latencies else float("nan"),
        "p99_s": percentile(latencies, 0.99) if latencies else float("nan"),
        "max_s": max(latencies) if latencies else float("nan"),
        "per_s": len(arrived) / max(1e-9, last - first_commit),
        # Where the time went: the bench's own commits, the fan-out, the last receipt.
        "commits_done_s": max(at for at, _ in committed.values()) - first_commit,
        "fanned_out_s": fanned_out_at(stack, committed) - first_commit,
        "last_receipt_s": last - first_commit,
    }


def plain_loop(receiver: Receiver, teams: list[tuple[str, Any]], events: int) -> dict[str, Any]:
    """The baseline: sign and POST every delivery in turn, synchronously."""
    import httpx2

    from service.webhooks.events import build_payload
    from service.webhooks.signing import build_headers, generate_secret

    secret = generate_secret()
    start = time.time()
    sent = 0
    with httpx2.Client(timeout=15) as client:
        for i in range(events):
            team_index = i % len(teams)
            payload = build_payload(
                f"evt_plain{i}",
                "fine_tuning.job.running",
                int(time.time()),
                {"id": f"ftjob-plain{i}", "object": "fine_tuning.job", "status": "running"},
                1,
            )
            for _endpoint_id, path in teams[team_index][1]:
                headers = build_headers([secret], f"msg_plain{i}", payload)
                client.post(f"{receiver.url}{path}", content=payload, headers=headers)
                sent += 1
    elapsed = time.time() - start
    return {"delivered": sent, "per_s": sent / elapsed, "ms_each": elapsed / sent * 1000}


class Blackhole:
    """Accepts connections and never answers: a hung receiver, each attempt a timeout."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=511)
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/down"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def take_down(stack: Stack, endpoint_id: str, url: str | None = None) -> None:
    """Point one endpoint at ``url``, or at a port nobody listens on (connection refused)."""
    import sqlalchemy as sa

    from service.webhooks.models import WebhookEndpoint

    dead = url or f"http://127.0.0.1:{free_port()}/down"
    stack.db(
        lambda session: session.execute(
            sa.update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)  # type: ignore[arg-type]
            .values(url=dead)
        )
    )


def run(
    events: int,
    rate: float,
    concurrency: int,
    timeout: float,
    per_commit: int = 1,
    down: str = "refused",
) -> dict[str, Any]:
    env = {
        "FTQ_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        # Production cadence: the fan-out beat is only the safety net, not what makes it fast.
        "FTQ_SWEEP_INTERVAL_SECONDS": "10",
    }
    stack = Stack("benchwh", extra_env=env)
    receiver = Receiver()
    try:
        stack.start(workers=0)
        for index in range(2):
            stack.start_worker(f"worker{index}", concurrency=concurrency)
        time.sleep(3)  # let both workers join (the warm-up below makes sure)
        teams = setup(stack, receiver)
        from service.broker import publish
        from service.dispatch import install_publisher

        results: dict[str, Any] = {}
        with stack.settings_env():
            install_publisher(publish)
            # Warm-up, off the clock: one state change per team, delivered end to end, so
            # worker processes still starting on a busy machine are not what is measured.
            first = receiver.count()
            warm = commit_changes(stack, teams, len(teams), 0, "warm")
            measure(stack, receiver, first, warm, len(warm) * ENDPOINTS_PER_TEAM, timeout)
            first = receiver.count()
            committed = commit_changes(stack, teams, events, rate, "up", per_commit)
            results["all_up"] = measure(
                stack, receiver, first, committed, events * ENDPOINTS_PER_TEAM, timeout
            )

            down_id, down_path = teams[0][1][0]
            blackhole = Blackhole() if down == "hang" else None
            take_down(stack, down_id, blackhole.url if blackhole else None)
            first = receiver.count()
            committed = commit_changes(stack, teams, events, rate, "down", per_commit)
            expected = events * ENDPOINTS_PER_TEAM - sum(
                1 for _at, team_index in committed.values() if team_index == 0
            )
            results["one_down"] = measure(
                stack, receiver, first, committed, expected, timeout, skip_path=down_path
            )
            install_publisher(None)
        results["plain_loop"] = plain_loop(receiver, teams, events)
        return results
    finally:
        receiver.server.shutdown()
        stack.stop()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000, help="state changes (x10 endpoints)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="offered deliveries/s (0: all at once)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="per worker process")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--down",
        choices=("refused", "hang"),
        default="refused",
        help="how the endpoint that is down fails: connection refused, or never answering",
    )
    parser.add_argument(
        "--per-commit",
        type=int,
        default=1,
        help="state changes per transaction (the bench's own commits can be the limit)",
    )
    args = parser.parse_args()
    results = run(
        args.events, args.rate, args.concurrency, args.timeout, args.per_commit, args.down
    )
    for phase in ("all_up", "one_down"):
        row = results[phase]
        print(
            f"{phase:>9}: {row['delivered']}/{row['expected']} delivered, commit → receipt "
            f"p50 {row['p50_s']:.2f} s, p99 {row['p99_s']:.2f} s, max {row['max_s']:.2f} s; "
            f"{row['per_s']:.0f} deliveries/s (offered {args.rate:.0f}/s); commits done at "
            f"{row['commits_done_s']:.1f} s, fan-out at {row['fanned_out_s']:.1f} s, last "
            f"receipt at {row['last_receipt_s']:.1f} s"
        )
    plain = results["plain_loop"]
    print(
        f"plain loop: {plain['delivered']} delivered, {plain['per_s']:.0f} deliveries/s "
        f"({plain['ms_each']:.1f} ms each)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
