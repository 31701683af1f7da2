"""Database engine and sessions.

Postgres is the source of truth in production; the embedded default is one SQLite file
shared by the API, worker and beat processes, so SQLite runs in WAL mode with a busy
timeout. Services never commit: the unit of work (request dependency or task) does, via
``session_scope``; after-commit hooks (task enqueues) run only once the commit succeeded.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from service.config import Settings, get_settings

log = structlog.get_logger(__name__)

_engines: dict[str, Engine] = {}


def utcnow() -> dt.datetime:
    # Aware UTC everywhere: SQLModel's datetime columns refuse naive values.
    return dt.datetime.now(dt.UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # SQLite's default deferred transactions upgrade read locks to write locks lazily,
        # which deadlocks concurrent writers; BEGIN IMMEDIATE takes the write lock up front.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    url = settings.resolved_database_url
    if url not in _engines:
        if settings.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        _engines[url] = make_engine(url)
    return _engines[url]


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


# After-commit hooks of the current unit of work (enqueue a task once the row is visible).
_after_commit: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "ftq_after_commit", default=None
)


def after_commit(hook: Callable[[], None]) -> None:
    """Run ``hook`` after the current unit of work commits; dropped on rollback."""
    hooks = _after_commit.get()
    if hooks is None:
        # Outside a unit of work there is nothing to wait for.
        hook()
        return
    hooks.append(hook)


@contextlib.contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error, then run after-commit hooks."""
    hooks: list[Callable[[], None]] = []
    token = _after_commit.set(hooks)
    try:
        with Session(get_engine(settings), expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                for undo in session.info.get("on_rollback", []):
                    undo()
                raise
    finally:
        _after_commit.reset(token)
    for hook in hooks:
        try:
            hook()
        except Exception:
            # The state is committed; the reconciler re-enqueues whatever this hook missed.
            log.exception("after_commit_hook_failed")
