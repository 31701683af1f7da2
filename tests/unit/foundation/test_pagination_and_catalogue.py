"""One keyset pagination for every list, and the webhook event catalogue enforced when the
outbox row is written (issue 10, item 3)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from service.db import session_scope
from service.errors import InvalidRequest
from service.pagination import INVALID_CURSOR, list_object
from service.tenants import audit
from service.tenants import service as tenants
from service.tenants.models import Role
from service.webhooks import service as webhooks
from service.webhooks.events import EVENT_TYPES, EventType, UnknownEventType, build_payload
from service.webhooks.outbox import OutboxEvent, record_event


def _team(name: str) -> str:
    with session_scope() as session:
        return tenants.create_team(session, name).id


def _keys(team_id: str, count: int) -> list[str]:
    with session_scope() as session:
        return [
            tenants.create_key(session, team_id, Role.member, f"k{i}")[0].id for i in range(count)
        ]


def _walk(list_page, limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        rows, has_more = list_page(after, limit)
        seen += [r.id for r in rows]
        if not has_more:
            return seen
        after = rows[-1].id


@pytest.mark.usefixtures("db")
class TestKeysetPagination:
    def test_pages_cover_the_list_once_newest_first(self) -> None:
        team = _team("pages")
        created = _keys(team, 7)

        def page(after, limit):
            with session_scope() as session:
                return tenants.list_keys(session, team, after=after, limit=limit)

        for limit in (1, 3, 7, 100):
            assert _walk(page, limit) == list(reversed(created))

    def test_unknown_and_foreign_cursors_answer_alike_everywhere(self) -> None:
        mine, theirs = _team("mine"), _team("theirs")
        (foreign_key,) = _keys(theirs, 1)
        _keys(mine, 2)
        with session_scope() as session:
            audit.record(session, None, "thing.done", "thing", "t1", team_id=theirs)
        with session_scope() as session:
            foreign_event = session.exec(
                select(audit.AuditEvent).where(audit.AuditEvent.team_id == theirs)
            ).first()
        assert foreign_event is not None
        lists = {
            "api keys": lambda s, after: tenants.list_keys(s, mine, after=after),
            "audit": lambda s, after: audit.list_events(s, mine, audit.AuditFilter(), after=after),
            "webhook endpoints": lambda s, after: webhooks.list_endpoints(s, mine, after=after),
            "teams": lambda s, after: tenants.list_teams(s, after=after),
        }
        for name, call in lists.items():
            for cursor in ("missing_id", foreign_key, foreign_event.id):
                if name == "teams" and cursor != "missing_id":
                    continue  # operators see every team: a key id is simply unknown there
                with session_scope() as session, pytest.raises(InvalidRequest) as caught:
                    call(session, cursor)
                error = caught.value.to_body()["error"]
                assert (error["param"], error["code"], caught.value.status_code) == (
                    "after",
                    INVALID_CURSOR,
                    400,
                ), name
                assert cursor in error["message"]

    def test_list_object_names_first_and_last(self) -> None:
        assert list_object([{"id": "a"}, {"id": "b"}], True) == {
            "object": "list",
            "data": [{"id": "a"}, {"id": "b"}],
            "has_more": True,
            "first_id": "a",
            "last_id": "b",
        }
        assert list_object([], False)["first_id"] is None


class TestEventCatalogue:
    def test_every_type_is_in_the_catalogue_and_named_like_openai(self) -> None:
        assert frozenset(t.value for t in EventType) == EVENT_TYPES
        for event_type in EVENT_TYPES:
            assert event_type == event_type.lower() and "." in event_type

    def test_build_payload_refuses_an_unknown_type(self) -> None:
        with pytest.raises(UnknownEventType):
            build_payload("evt_1", "fine_tuning.job.exploded", 1, {}, 1)


@pytest.mark.usefixtures("db")
class TestOutboxRefusesUnknownEvents:
    def test_unknown_type_fails_the_write_and_the_transaction(self) -> None:
        team = _team("outbox")
        with pytest.raises(UnknownEventType), session_scope() as session:
            audit.record(session, None, "thing.done", "thing", "t1", team_id=team)
            record_event(
                session,
                team_id=team,
                event_type="fine_tuning.job.exploded",
                object_id="ftjob-1",
                sequence=1,
                data={},
            )
        with session_scope() as session:
            assert session.exec(select(OutboxEvent)).all() == []
            # The state change the event belonged to rolled back with it.
            rows, _ = audit.list_events(session, team, audit.AuditFilter(action="thing.done"))
            assert rows == []

    def test_data_json_cannot_carry_is_refused(self) -> None:
        team = _team("nan")
        with pytest.raises(ValueError), session_scope() as session:
            record_event(
                session,
                team_id=team,
                event_type=EventType.JOB_SUCCEEDED,
                object_id="ftjob-1",
                sequence=1,
                data={"loss": float("nan")},
            )

    def test_catalogue_types_are_written(self) -> None:
        team = _team("ok")
        with session_scope() as session:
            record_event(
                session,
                team_id=team,
                event_type="fine_tuning.job.succeeded",
                object_id="ftjob-1",
                sequence=1,
                data={"id": "ftjob-1"},
            )
        with session_scope() as session:
            (row,) = session.exec(select(OutboxEvent)).all()
            assert row.event_type == "fine_tuning.job.succeeded"
