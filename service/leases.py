"""Leases: who may work on a row right now, written once for every kind of durable work.

A lease is two columns on the row (``lease_owner``, ``lease_expires_at``). Claiming,
renewing and releasing are compare-and-set updates, so two workers (a redelivered message, a
second beat, a reconciler) can never both hold one; a worker that dies simply lets its lease
lapse, and the row is claimable again. Nothing here holds a transaction open while work runs.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog
from sqlmodel import Session, col

from service.db import session_scope, utcnow

log = structlog.get_logger(__name__)


def not_leased(model: Any, now: dt.datetime | None = None) -> sa.ColumnElement[bool]:
    """Rows nobody holds: never leased, released, or lapsed."""
    now = now or utcnow()
    return sa.or_(col(model.lease_expires_at).is_(None), col(model.lease_expires_at) < now)


def held_by(model: Any, row_id: Any, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(col(model.id) == row_id, col(model.lease_owner) == owner)


def is_held(expires_at: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    if expires_at is None:
        return False
    if expires_at.tzinfo is None:  # SQLite hands back naive datetimes
        expires_at = expires_at.replace(tzinfo=dt.UTC)
    return expires_at > (now or utcnow())


def claim(
    session: Session,
    model: Any,
    row_id: Any,
    owner: str,
    seconds: float,
    *,
    where: tuple[sa.ColumnElement[bool], ...] = (),
    steal_from: str | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """Take the row's lease if nobody holds it (or ``steal_from`` does, e.g. our own earlier
    claim) and every ``where`` holds; ``values`` are written in the same update."""
    now = utcnow()
    free = not_leased(model, now)
    if steal_from is not None:
        free = sa.or_(free, col(model.lease_owner) == steal_from)
    result = session.execute(
        sa.update(model)
        .where(col(model.id) == row_id, free, *where)
        .values(
            lease_owner=owner,
            lease_expires_at=now + dt.timedelta(seconds=seconds),
            **(values or {}),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew(model: Any, row_id: Any, owner: str, seconds: float) -> bool:
    """Extend our lease; False when it is no longer ours (lapsed and taken)."""
    with session_scope() as session:
        result = session.execute(
            sa.update(model)
            .where(held_by(model, row_id, owner))
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=seconds))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, model: Any, row_id: Any, owner: str, **values: Any) -> bool:
    result = session.execute(
        sa.update(model)
        .where(held_by(model, row_id, owner))
        .values(lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def clear(row: Any) -> None:
    """Drop the lease on a row loaded (and locked) in the current transaction."""
    row.lease_owner = None
    row.lease_expires_at = None


class Heartbeat:
    """Renews a lease from its own thread while long work runs (a training run, an eval), so
    a slow step never lets it lapse while the worker is alive; ``lost`` is set when the
    lease was taken by someone else."""

    def __init__(
        self,
        model: Any,
        row_id: Any,
        owner: str,
        *,
        seconds: float,
        every: float,
        renew_fn: Callable[[Any, Any, str, float], bool] = renew,
    ) -> None:
        self.model, self.row_id, self.owner = model, row_id, owner
        self.seconds, self.every, self._renew = seconds, every, renew_fn
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ftq-lease", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self._renew(self.model, self.row_id, self.owner, self.seconds):
                    self.lost.set()
                    return
            except Exception:  # a database blip: try again next beat, the lease has slack
                log.warning("lease_renewal_failed", row_id=self.row_id, exc_info=True)
