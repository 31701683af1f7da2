"""Fan-out, leases, sending and the endpoint service on a real (SQLite) database, in process,
against real loopback receivers. Messages are captured instead of published, so each test
runs the delivery pump itself for each wake-up, exactly as a worker would."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select
from standardwebhooks import Webhook

from service import dispatch
from service.config import get_settings, reset_settings_cache
from service.db import dispose_engines, session_scope, utcnow
from service.errors import Conflict, NotFound
from service.tenants import service as tenants
from service.webhooks import delivery, pump
from service.webhooks import service as webhooks
from service.webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointNotice,
)
from service.webhooks.outbox import OutboxEvent, record_event
from tests.unit.webhooks.receivers import Receiver, reply

Published = list[tuple[str, tuple[Any, ...]]]
FANOUT_WAKEUPS: Published = []


@pytest.fixture
def published(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Published]:
    for name in ("FTQ_DATABASE_URL", "FTQ_ENCRYPTION_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FTQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FTQ_WEBHOOKS__ALLOWED_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("FTQ_WEBHOOKS__RETRY_SCHEDULE_SECONDS", "[1, 2]")
    monkeypatch.setenv("FTQ_WEBHOOKS__TIMEOUT_SECONDS", "3")
    reset_settings_cache()
    dispose_engines()
    from migrations import upgrade

    upgrade(get_settings().resolved_database_url)
    sent: Published = []
    previous = dispatch._publisher
    # Fan-out wake-ups after outbox writes go to their own list: these tests run fanout()
    # themselves, and read ``published`` as the deliveries' messages.
    FANOUT_WAKEUPS.clear()
    dispatch.install_publisher(
        lambda name, args, _options: (FANOUT_WAKEUPS if name == "webhooks.fanout" else sent).append(
            (name, args)
        )
    )
    yield sent
    dispatch.install_publisher(previous)
    dispose_engines()
    reset_settings_cache()


def _team(name: str = "team") -> str:
    with session_scope() as session:
        return tenants.create_team(session, name).id


def _endpoint(team_id: str, url: str, **options: Any) -> tuple[str, str]:
    with session_scope() as session:
        endpoint, secret = webhooks.create_endpoint(session, team_id, url=url, **options)
        return endpoint.id, secret


def _event(team_id: str, event_type: str, object_id: str, sequence: int) -> None:
    with session_scope() as session:
        record_event(
            session,
            team_id=team_id,
            event_type=event_type,
            object_id=object_id,
            sequence=sequence,
            data={"id": object_id, "object": "fine_tuning.job", "sequence_seen": sequence},
        )


def _delivery(delivery_id: str) -> WebhookDelivery:
    with session_scope() as session:
        return session.exec(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)).one()


def _endpoint_row(endpoint_id: str) -> WebhookEndpoint:
    with session_scope() as session:
        return session.exec(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)).one()


def _make_due(delivery_id: str) -> None:
    with session_scope() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)  # type: ignore[arg-type]
            .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1))
        )


def _deliver_published(published: Published) -> list[str]:
    """Run a pump for every captured ``webhooks.deliver_due`` wake-up, as a worker would."""
    outcomes = []
    while published:
        name, args = published.pop(0)
        assert (name, args) == ("webhooks.deliver_due", ())
        outcomes += pump.run()
    return outcomes


def _only_delivery_id() -> str:
    with session_scope() as session:
        (delivery_id,) = session.exec(select(WebhookDelivery.id)).all()
        return delivery_id


class _Rollback(Exception):
    pass


def test_fanout_signs_sends_once_and_is_idempotent(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    team = _team()
    _endpoint_id, secret = _endpoint(team, receiver.url())
    # filtered out: subscribes to another type; disabled; another team's
    _endpoint(team, receiver.url("/files"), event_types=["file.validated"])
    _endpoint(team, receiver.url("/off"), enabled=False)
    _endpoint(_team("other"), receiver.url("/other"))
    _event(team, "fine_tuning.job.queued", "ftjob-1", 1)

    assert delivery.fanout() == 1
    assert delivery.fanout() == 0  # the outbox row is dispatched
    assert published == [("webhooks.deliver_due", ())]
    assert _deliver_published(published) == ["succeeded"]
    # A duplicated wake-up (e.g. a broker redelivery) finds nothing left to send.
    assert pump.run() == []
    assert published == []
    delivery_id = _only_delivery_id()

    assert [r.path for r in receiver.requests] == ["/hook"]
    request = receiver.requests[0]
    event = Webhook(secret).verify(request.body, request.headers)
    assert event["type"] == "fine_tuning.job.queued" and event["sequence"] == 1
    assert event["data"]["id"] == "ftjob-1"
    row = _delivery(delivery_id)
    assert row.status == DeliveryStatus.succeeded and row.msg_id == request.headers["webhook-id"]
    with session_scope() as session:
        assert session.exec(select(OutboxEvent.dispatched_at)).one() is not None
        stored = session.exec(select(WebhookEndpoint.secret_encrypted)).all()
    assert all(secret not in value for value in stored)  # only ciphertext at rest


def test_failures_follow_the_schedule_then_exhaust(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(reply(500, b"boom" * 1000))
    team = _team()
    endpoint_id, _ = _endpoint(team, receiver.url())
    _event(team, "fine_tuning.job.failed", "ftjob-2", 3)
    delivery.fanout()
    delivery_id = _only_delivery_id()

    before = utcnow()
    assert _deliver_published(published) == ["retry_scheduled"]
    row = _delivery(delivery_id)
    wait = (row.next_attempt_at - before).total_seconds()  # type: ignore[operator]
    assert 0.8 - 0.1 <= wait <= 1.2 + 0.5  # schedule[0] = 1 s, +-20% jitter
    assert delivery.sweep() == 0  # not due yet
    assert published == []

    for expected in ("retry_scheduled", "failed"):
        _make_due(delivery_id)
        assert delivery.sweep() == 1
        assert _deliver_published(published) == [expected]

    row = _delivery(delivery_id)
    assert row.status == DeliveryStatus.failed and row.total_attempts == 3
    assert row.last_status_code == 500 and row.last_error == "HTTP 500"
    with session_scope() as session:
        attempts = session.exec(select(WebhookAttempt).order_by(WebhookAttempt.pk)).all()  # type: ignore[arg-type]
    assert [a.attempt_number for a in attempts] == [1, 2, 3]
    assert all(a.status_code == 500 and not a.ok for a in attempts)
    assert all(len(a.response_body) == 2048 for a in attempts)  # first 2 KB only
    assert len({h.headers["webhook-id"] for h in receiver.requests}) == 1
    assert _endpoint_row(endpoint_id).enabled  # 3 quick failures are not "sustained"


def test_410_disables_at_once_skips_the_rest_and_tells_the_team(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    gone = receiver_factory(reply(410))
    healthy = receiver_factory()
    team = _team()
    gone_id, _ = _endpoint(team, gone.url())
    _healthy_id, healthy_secret = _endpoint(team, healthy.url())
    _event(team, "fine_tuning.job.queued", "ftjob-3", 1)
    _event(team, "file.validated", "file-3", 1)
    delivery.fanout()
    _deliver_published(published)

    endpoint = _endpoint_row(gone_id)
    assert not endpoint.enabled and "410" in (endpoint.disabled_reason or "")
    with session_scope() as session:
        statuses = sorted(
            session.exec(
                select(WebhookDelivery.status).where(WebhookDelivery.endpoint_id == gone_id)
            ).all()
        )
        notices = session.exec(select(WebhookEndpointNotice)).all()
    # one delivery answered 410 (failed); the other was skipped or failed the same way
    assert statuses[0] == DeliveryStatus.failed and len(statuses) == 2
    assert [n.endpoint_id for n in notices] == [gone_id]

    # The team's other endpoint hears about it through the outbox.
    delivery.fanout()
    _deliver_published(published)
    events = [Webhook(healthy_secret).verify(r.body, r.headers) for r in healthy.requests]
    disabled = [e for e in events if e["type"] == "webhook_endpoint.disabled"]
    assert len(disabled) == 1 and disabled[0]["data"]["id"] == gone_id
    assert disabled[0]["data"]["enabled"] is False


def test_sustained_failure_disables(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(reply(503))
    team = _team()
    endpoint_id, _ = _endpoint(team, receiver.url())
    with session_scope() as session:
        session.execute(
            sa.update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)  # type: ignore[arg-type]
            .values(failing_since=utcnow() - dt.timedelta(days=6))
        )
    _event(team, "fine_tuning.job.running", "ftjob-4", 2)
    delivery.fanout()
    assert _deliver_published(published) == ["failed"]
    endpoint = _endpoint_row(endpoint_id)
    assert not endpoint.enabled and "failed since" in (endpoint.disabled_reason or "")


def test_a_success_resets_the_failure_clock(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    team = _team()
    endpoint_id, _ = _endpoint(team, receiver.url())
    with session_scope() as session:
        session.execute(
            sa.update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)  # type: ignore[arg-type]
            .values(failing_since=utcnow() - dt.timedelta(days=1))
        )
    _event(team, "fine_tuning.job.running", "ftjob-5", 2)
    delivery.fanout()
    assert _deliver_published(published) == ["succeeded"]
    assert _endpoint_row(endpoint_id).failing_since is None


def test_events_about_one_object_go_out_in_sequence_order(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    team = _team()
    _endpoint(team, receiver.url())
    for sequence, status in enumerate(("queued", "running", "succeeded"), start=1):
        _event(team, f"fine_tuning.job.{status}", "ftjob-6", sequence)
    _event(team, "file.validated", "file-6", 1)
    delivery.fanout()
    # The first job event and the (unrelated) file event are due at once; the rest wait.
    with pytest.raises(_Rollback), session_scope() as session:
        claimed = pump.claim(session, "probe", 10)
        assert sorted(json.loads(s.body)["data"]["id"] for s in claimed.sends) == [
            "file-6",
            "ftjob-6",
        ]
        assert [json.loads(s.body)["sequence"] for s in claimed.sends] == [1, 1]
        raise _Rollback
    # One pump sends them all: each recorded success makes the next one in line due.
    assert _deliver_published(published) == ["succeeded"] * 4
    sequences = [json.loads(r.body)["sequence"] for r in receiver.requests if b"ftjob-6" in r.body]
    assert sequences == [1, 2, 3]


def test_rotation_signs_with_both_secrets_during_the_overlap(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    team = _team()
    endpoint_id, old_secret = _endpoint(team, receiver.url())
    with session_scope() as session:
        rotated = webhooks.rotate_secret(session, team, endpoint_id)
    with session_scope() as session:
        assert webhooks.reveal_secret(session, team, endpoint_id)["secret"] == rotated["secret"]
    assert rotated["secret"] != old_secret and rotated["previous_secret_expires_at"]
    with session_scope() as session:
        webhooks.send_test(session, team, endpoint_id)
    assert _deliver_published(published) == ["succeeded"]
    request = receiver.requests[0]
    assert len(request.headers["webhook-signature"].split()) == 2
    for secret in (old_secret, rotated["secret"]):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "webhook.test"


def test_replay_keeps_the_webhook_id_and_is_scoped_to_the_team(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    team, intruder = _team(), _team("intruder")
    endpoint_id, _ = _endpoint(team, receiver.url())
    _event(team, "fine_tuning.job.queued", "ftjob-7", 1)
    delivery.fanout()
    delivery_id = _only_delivery_id()
    _deliver_published(published)

    with session_scope() as session, pytest.raises(NotFound):
        webhooks.replay(session, intruder, endpoint_id, delivery_id)
    with session_scope() as session, pytest.raises(NotFound):
        webhooks.get_endpoint(session, intruder, endpoint_id)
    assert published == []

    with session_scope() as session:
        webhooks.replay(session, team, endpoint_id, delivery_id)
    assert _deliver_published(published) == ["succeeded"]
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert _delivery(delivery_id).total_attempts == 2

    with session_scope() as session:
        webhooks.update_endpoint(session, team, endpoint_id, enabled=False)
    with session_scope() as session, pytest.raises(Conflict):
        webhooks.replay(session, team, endpoint_id, delivery_id)


def test_deleting_an_endpoint_removes_its_deliveries(
    published: Published, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    team = _team()
    endpoint_id, _ = _endpoint(team, receiver.url())
    _event(team, "fine_tuning.job.queued", "ftjob-8", 1)
    delivery.fanout()
    _deliver_published(published)
    with session_scope() as session:
        webhooks.delete_endpoint(session, team, endpoint_id)
    with session_scope() as session:
        assert session.exec(select(WebhookDelivery)).all() == []
        assert session.exec(select(WebhookAttempt)).all() == []
        with pytest.raises(NotFound):
            webhooks.get_endpoint(session, team, endpoint_id)


def test_an_outbox_write_wakes_the_fanout_once_per_transaction(published: Published) -> None:
    quiet_team = _team("quiet")
    _event(quiet_team, "fine_tuning.job.running", "ftjob-quiet", 1)
    assert FANOUT_WAKEUPS == []  # nobody listens: beat's fan-out marks it dispatched
    team_id = _team()
    _endpoint(team_id, "http://127.0.0.1:9/hook")
    with session_scope() as session:
        for sequence in (1, 2, 3):
            record_event(
                session,
                team_id=team_id,
                event_type="fine_tuning.job.running",
                object_id="ftjob-wake",
                sequence=sequence,
                data={"id": "ftjob-wake"},
            )
        assert FANOUT_WAKEUPS == []  # nothing before the commit
    assert [name for name, _ in FANOUT_WAKEUPS] == ["webhooks.fanout"]
    FANOUT_WAKEUPS.clear()
    with pytest.raises(RuntimeError), session_scope() as session:
        record_event(
            session,
            team_id=team_id,
            event_type="fine_tuning.job.running",
            object_id="ftjob-wake",
            sequence=4,
            data={"id": "ftjob-wake"},
        )
        raise RuntimeError("rolled back")
    assert FANOUT_WAKEUPS == []  # a rolled-back state change wakes nobody
    _event(team_id, "fine_tuning.job.succeeded", "ftjob-wake", 5)
    assert [name for name, _ in FANOUT_WAKEUPS] == ["webhooks.fanout"]
