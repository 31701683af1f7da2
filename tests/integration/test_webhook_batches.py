"""Batch claiming of webhook deliveries on real Postgres: concurrent claims never share a
row, pumps in separate processes deliver each row once, a lapsed lease is delivered again
with the same webhook-id, and a hanging endpoint holds only its own deliveries back.

The pumps run in this process (and in spawned processes) against the stack's own database,
exactly as a worker's ``webhooks.deliver_due`` runs them; receivers are real loopback HTTP
servers that verify every signature."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from tests.integration.stack import Stack, wait_for

BATCH_ENV = {
    "FTQ_WEBHOOKS__TIMEOUT_SECONDS": "20",
    "FTQ_WEBHOOKS__PUMPS": "3",
    "FTQ_WEBHOOKS__PUMP_THREADS": "4",
    "FTQ_WEBHOOKS__CLAIM_BATCH": "8",
    "FTQ_WEBHOOKS__MAX_IN_FLIGHT_PER_ENDPOINT": "2",
    "FTQ_LEASE_SECONDS": "30",
}


@dataclass
class Receiver:
    """Answers 200 after ``hold`` returns; records each hit and the concurrency it saw."""

    secret: str = ""
    hold: Callable[[], None] = lambda: None
    hits: list[str] = field(default_factory=list)  # webhook-id per verified request
    unverified: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)  # webhook-id -> open requests
    overlaps: list[str] = field(default_factory=list)  # ids sent twice at the same time
    open_now: int = 0
    most_open: int = 0

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                webhook_id = headers.get("webhook-id", "")
                with lock:
                    try:
                        Webhook(receiver.secret).verify(body, headers)
                        receiver.hits.append(webhook_id)
                    except Exception:
                        receiver.unverified += 1
                    receiver.in_flight[webhook_id] = receiver.in_flight.get(webhook_id, 0) + 1
                    if receiver.in_flight[webhook_id] > 1:
                        receiver.overlaps.append(webhook_id)
                    receiver.open_now += 1
                    receiver.most_open = max(receiver.most_open, receiver.open_now)
                receiver.hold()
                with lock:
                    receiver.in_flight[webhook_id] -= 1
                    receiver.open_now -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def wb() -> Iterator[Stack]:
    stack = Stack("whbatch", extra_env=BATCH_ENV)
    try:
        stack.migrate()
        with stack.settings_env():
            from service.dispatch import install_publisher

            # Wake-ups are not needed here: each test runs the pumps itself.
            install_publisher(lambda _name, _args, _options: None)
            yield stack
            install_publisher(None)
    finally:
        stack.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        started.append(Receiver(**kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def _endpoint(stack: Stack, team_id: str, receiver: Receiver) -> str:
    from service.webhooks import service as webhooks

    def make(session: Any) -> str:
        endpoint, secret = webhooks.create_endpoint(session, team_id, url=receiver.url)
        receiver.secret = secret
        return endpoint.id

    return str(stack.db(make))


def _events(stack: Stack, team_id: str, count: int, tag: str) -> None:
    """``count`` state changes of distinct objects, fanned out to deliveries."""
    from service.webhooks import delivery
    from service.webhooks.outbox import record_event

    def write(session: Any) -> None:
        for i in range(count):
            record_event(
                session,
                team_id=team_id,
                event_type="fine_tuning.job.running",
                object_id=f"ftjob-{tag}-{i}",
                sequence=1,
                data={"id": f"ftjob-{tag}-{i}", "object": "fine_tuning.job"},
            )

    stack.db(write)
    while delivery.fanout():
        pass


def _deliveries(stack: Stack, endpoint_id: str) -> list[Any]:
    from sqlmodel import select

    from service.webhooks.models import WebhookDelivery

    return list(
        stack.db(
            lambda s: s.exec(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
            ).all()
        )
    )


def _retire(stack: Stack, endpoint_id: str) -> None:
    from service.webhooks.models import WebhookDelivery

    stack.db(
        lambda s: s.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)  # type: ignore[arg-type]
            .values(status="skipped", lease_owner=None, lease_expires_at=None)
        )
    )


def _pump_until_done(stack: Stack) -> list[str]:
    from service.webhooks import delivery, pump

    outcomes: list[str] = []
    with stack.settings_env():
        while delivery.due_count(limit=1):
            outcomes += pump.run()
    return outcomes


def test_concurrent_claims_skip_each_others_rows_without_waiting(
    wb: Stack, receivers: Callable[..., Receiver]
) -> None:
    from service.db import session_scope
    from service.webhooks import pump

    team = wb.create_team("claims")
    receiver = receivers()
    endpoint_id = _endpoint(wb, team.id, receiver)
    _events(wb, team.id, 30, "claims")

    with wb.settings_env(), session_scope() as first:
        mine = pump.claim(first, "pump-a", 12)
        # The first claim's transaction is still open, its rows locked and not yet leased
        # in anyone else's view: a second claim must pass them by, not wait for them.
        with session_scope() as second:
            second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            theirs = pump.claim(second, "pump-b", 12)
            with session_scope() as third:
                third.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                rest = pump.claim(third, "pump-c", 100)
    claimed = [{s.delivery_id for s in c.sends} for c in (mine, theirs, rest)]
    assert [len(ids) for ids in claimed] == [12, 12, 6]
    assert set.union(*claimed) == {d.id for d in _deliveries(wb, endpoint_id)}
    owners = {d.id: d.lease_owner for d in _deliveries(wb, endpoint_id)}
    for ids, token in zip(claimed, ("pump-a", "pump-b", "pump-c"), strict=True):
        assert {owners[i] for i in ids} == {token}
    # Leased rows are nobody else's: a fresh claim finds nothing.
    with wb.settings_env(), session_scope() as session:
        assert len(pump.claim(session, "pump-d", 100)) == 0
    assert receiver.hits == []
    _retire(wb, endpoint_id)  # never sent: keep them from the next tests' pumps


def _pump_in_a_process(env: dict[str, str], barrier: Any, results: Any) -> None:
    os.environ.update(env)
    from service.config import reset_settings_cache
    from service.dispatch import install_publisher
    from service.webhooks import pump

    reset_settings_cache()
    install_publisher(lambda _name, _args, _options: None)
    barrier.wait(60)
    results.put(pump.run())


def test_pumps_in_parallel_processes_send_each_delivery_once(
    wb: Stack, receivers: Callable[..., Receiver]
) -> None:
    team = wb.create_team("parallel")
    endpoints = {}
    for _ in range(3):
        receiver = receivers()
        endpoints[_endpoint(wb, team.id, receiver)] = receiver
    _events(wb, team.id, 60, "parallel")  # 180 deliveries

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    workers = [
        context.Process(target=_pump_in_a_process, args=(wb.env, barrier, results))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    outcomes.append(_pump_until_done(wb))  # anything a pump left (none expected)

    for endpoint_id, receiver in endpoints.items():
        rows = _deliveries(wb, endpoint_id)
        assert len(rows) == 60
        assert all(r.status == "succeeded" and r.total_attempts == 1 for r in rows)
        assert sorted(receiver.hits) == sorted(r.msg_id for r in rows)  # each exactly once
        assert receiver.overlaps == [] and receiver.unverified == 0
    assert sum(len(o) for o in outcomes) == 180
    # More than one process took part (each claim is small), and none sent another's rows.
    assert sum(1 for o in outcomes[:3] if o) >= 2


def test_a_lapsed_lease_is_delivered_again_with_the_same_webhook_id(
    wb: Stack, receivers: Callable[..., Receiver]
) -> None:
    from service.db import session_scope
    from service.webhooks import pump
    from service.webhooks.models import WebhookDelivery
    from service.webhooks.sender import Sender

    team = wb.create_team("lapsed")
    receiver = receivers()
    endpoint_id = _endpoint(wb, team.id, receiver)
    _events(wb, team.id, 1, "lapsed")

    with wb.settings_env():
        from service.config import get_settings

        # A pump claims the delivery and sends it, then dies before recording anything.
        with session_scope() as session:
            (send,) = pump.claim(session, "pump-dead", 10).sends
        sender = Sender(get_settings().webhooks, threads=1, per_endpoint=1)
        sender.submit(send)
        (late,) = sender.collect(timeout=30)
        sender.close()
        assert late[1] is not None and late[1].ok

        assert pump.run() == []  # still leased: nobody else may send it
        with session_scope() as session:  # the lease lapses
            session.execute(
                sa.update(WebhookDelivery)
                .where(WebhookDelivery.id == send.delivery_id)  # type: ignore[arg-type]
                .values(lease_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
            )
        assert pump.run() == ["succeeded"]
        # The dead pump's result, should it ever be written, is an attempt and no more.
        assert pump.record("pump-dead", [late]) == ["lease_lost"]

    (row,) = _deliveries(wb, endpoint_id)
    assert receiver.hits == [row.msg_id, row.msg_id]  # at least once, one webhook-id
    assert row.status == "succeeded" and row.lease_owner is None
    assert row.total_attempts == 2


def test_a_hanging_endpoint_holds_back_only_its_own_deliveries(
    wb: Stack, receivers: Callable[..., Receiver]
) -> None:
    fast_done = threading.Event()
    team = wb.create_team("hang")
    slow = receivers(hold=lambda: fast_done.wait(60))
    fast = receivers()
    slow_id = _endpoint(wb, team.id, slow)
    fast_id = _endpoint(wb, team.id, fast)
    _events(wb, team.id, 10, "hang")  # 10 deliveries to each, interleaved

    def fast_finished() -> bool:
        if len(fast.hits) == 10:
            fast_done.set()
        return fast_done.is_set()

    watcher = threading.Thread(
        target=wait_for, args=(fast_finished,), kwargs={"timeout": 60, "interval": 0.05}
    )
    watcher.start()
    outcomes = _pump_until_done(wb)
    watcher.join()

    # Every fast delivery arrived while the slow endpoint still held its first requests.
    assert fast_done.is_set() and len(fast.hits) == 10
    assert slow.most_open <= 2  # the per-endpoint cap
    assert sorted(slow.hits) == sorted(r.msg_id for r in _deliveries(wb, slow_id))
    assert all(r.status == "succeeded" for r in _deliveries(wb, slow_id))
    assert all(r.status == "succeeded" for r in _deliveries(wb, fast_id))
    assert outcomes.count("succeeded") == 20
