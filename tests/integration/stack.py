"""A real ftq stack for integration tests: its own Postgres database and Redis database
number (or the embedded default), the sandbox over HTTP, the API, Celery worker and beat —
each a real process, started with the same commands ``ftq dev`` uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from openai import OpenAI

from cli.processes import (
    ALL_QUEUES,
    CONTROL_CONCURRENCY,
    CONTROL_QUEUES,
    FOLLOW_QUEUES,
    ProcessGroup,
    api_command,
    beat_command,
    free_port,
    sandbox_command,
    wait_http_ok,
    worker_command,
)

PG_ADMIN_DSN = os.environ.get("FTQ_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("FTQ_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("FTQ_TEST_REDIS_PORT", "6379"))
TEST_SECRET_KEY = "ftq-test-secret-key-not-for-production"

# Fast clocks: a sweep every half second, short leases, a quick sandbox.
FAST_ENV = {
    "FTQ_ENV": "dev",
    "FTQ_SECRET_KEY": TEST_SECRET_KEY,
    "FTQ_LOG_FORMAT": "json",
    "FTQ_SWEEP_INTERVAL_SECONDS": "0.5",
    "FTQ_RECONCILE_INTERVAL_SECONDS": "1",
    "FTQ_LEASE_SECONDS": "8",
    "FTQ_SUBMIT_STALE_SECONDS": "2",
    "FTQ_POLL_INTERVAL_MIN_SECONDS": "0.3",
    "FTQ_POLL_INTERVAL_MAX_SECONDS": "1.5",
    "FTQ_WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.0/8",
    # The sandbox listens on loopback; teams' provider_credentials point at it.
    "FTQ_PROVIDER_ALLOWED_NETWORKS": "127.0.0.0/8",
    "SANDBOX_JOB_SPEED": "4",
}


def submitter_name(worker: str) -> str:
    """The submissions-and-sweep worker started with ``worker`` (worker0 -> submitter0)."""
    return worker.replace("worker", "submitter", 1) if worker.startswith("worker") else worker


def _redis_admin() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)


def allocate_redis_db(owner: str) -> int:
    """A Redis database number no concurrent run uses (a lease key in db 0 marks it)."""
    admin = _redis_admin()
    for number in range(1, 16):
        key = f"ftq:test-db-lease:{number}"
        holder = admin.get(key)
        if holder and not _alive(holder.decode().split("-", 1)[0]):
            admin.delete(key)  # a run that was killed: its number is free again
        if admin.set(key, owner, nx=True, ex=3 * 3600):
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number).flushdb()
            return number
    raise RuntimeError("no free Redis database number (1-15) for this test run")


def _alive(pid: str) -> bool:
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def release_redis_db(number: int, owner: str) -> None:
    admin = _redis_admin()
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number).flushdb()
    if admin.get(f"ftq:test-db-lease:{number}") == owner.encode():
        admin.delete(f"ftq:test-db-lease:{number}")


def create_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)


def drop_stale_databases() -> None:
    """Databases left by runs that were killed before their teardown (their pid is gone)."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'ftq_test_%'"
            )
        ]
        for name in names:
            pid = name[len("ftq_test_") :].split("_", 1)[0]
            if not _alive(pid):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Team:
    id: str
    name: str
    keys: dict[str, str]  # role -> plaintext key
    key_ids: dict[str, str]


class SandboxControl:
    def __init__(self, base: str) -> None:
        self.base = base  # http://127.0.0.1:PORT

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def config(self) -> dict[str, Any]:
        return self._call("GET", "/sandbox/config")

    def set_config(self, **patch: Any) -> dict[str, Any]:
        return self._call("PUT", "/sandbox/config", patch)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/sandbox/stats")

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in (("method", method), ("path", path)) if v)
        result = self._call("GET", "/sandbox/requests" + (f"?{query}" if query else ""))
        return result["data"] if isinstance(result, dict) and "data" in result else result

    @contextlib.contextmanager
    def configured(self, **patch: Any) -> Iterator[None]:
        before = self.config()
        self.set_config(**patch)
        try:
            yield
        finally:
            self.set_config(**{k: before[k] for k in patch})


@dataclass
class Stack:
    name: str
    embedded: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    root: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    group: ProcessGroup = field(init=False)
    database_name: str | None = None
    redis_db: int | None = None
    api_url: str = ""
    sandbox_url: str = ""
    sandbox: SandboxControl = field(init=False)
    _owner: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"ftq-{self.name}-"))
        env = {**FAST_ENV, "FTQ_DATA_DIR": str(self.root), **self.extra_env}
        if not self.embedded:
            self.database_name = f"ftq_test_{self._owner.replace('-', '_')}_{self.name}"
            env["FTQ_DATABASE_URL"] = create_database(self.database_name)
            self.redis_db = allocate_redis_db(self._owner)
            env["FTQ_BROKER_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}"
        sandbox_port, api_port = free_port(), free_port()
        self.sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        env["FTQ_PROVIDER_BASE_URL"] = f"{self.sandbox_url}/v1"
        self.env = env
        self.sandbox = SandboxControl(self.sandbox_url)
        self.group = ProcessGroup(env=env, log_dir=self.root / "logs")
        self._sandbox_port, self._api_port = sandbox_port, api_port

    # Processes ------------------------------------------------------------------------
    def migrate(self) -> None:
        with self.settings_env():
            from migrations import upgrade
            from service.config import get_settings

            upgrade(get_settings().resolved_database_url)

    def start(
        self,
        *,
        workers: int = 1,
        beat: bool = True,
        split_queues: bool = False,
        api_processes: int = 1,
    ) -> Stack:
        """``api_processes`` above 1 runs uvicorn with ``--workers`` (what ``ftq api
        --workers N`` runs; the compose file runs 2)."""
        self.migrate()
        sandbox = self.group.start("sandbox", sandbox_command("127.0.0.1", self._sandbox_port))
        api_args = ["--workers", str(api_processes)] if api_processes > 1 else []
        api = self.group.start("api", [*api_command("127.0.0.1", self._api_port), *api_args])
        for index in range(workers):
            self.start_worker(f"worker{index}", control=split_queues)
        if beat:
            self.start_beat()
        wait_http_ok(f"{self.sandbox_url}/healthz", proc=sandbox)
        wait_http_ok(f"{self.api_url}/healthz", timeout=60, proc=api)
        return self

    def start_worker(
        self,
        name: str = "worker0",
        concurrency: int = 2,
        *,
        control: bool = False,
        queues: str | None = None,
    ) -> None:
        """One worker consuming every queue (a small install's layout, and one process
        fewer per stack on a 2-core CI machine); with ``control``, the production layout
        as one unit: ``name`` consumes the following work (polls, files, webhooks) and its
        companion (``submitter0`` for ``worker0``) only submissions and the sweep.
        ``kill(name)`` takes both down, like losing a host."""
        queues = queues or (FOLLOW_QUEUES if control else ALL_QUEUES)
        self.group.start(
            name,
            worker_command(name=f"{name}-{self._owner}", concurrency=concurrency, queues=queues),
        )
        if control:
            self.start_submitter(submitter_name(name))

    def start_submitter(
        self, name: str = "submitter0", concurrency: int = CONTROL_CONCURRENCY
    ) -> None:
        self.group.start(
            name,
            worker_command(
                name=f"{name}-{self._owner}", concurrency=concurrency, queues=CONTROL_QUEUES
            ),
        )

    def start_beat(self, name: str = "beat") -> None:
        command = [*beat_command(), "--schedule", str(self.root / f"{name}-schedule")]
        self.group.start(name, command)

    def kill(self, name: str, *, alone: bool = False) -> None:
        """SIGKILL ``name`` and (unless ``alone``) the submitter started with it."""
        self.group.kill(name, signal.SIGKILL)
        companion = submitter_name(name)
        if not alone and companion != name and companion in self.group.children:
            self.group.kill(companion, signal.SIGKILL)

    def stop(self) -> None:
        self.group.stop_all(grace=5)
        with self.settings_env():
            from service.db import dispose_engines

            dispose_engines()
        if self.database_name:
            drop_database(self.database_name)
        if self.redis_db is not None:
            release_redis_db(self.redis_db, self._owner)
        if os.environ.get("FTQ_TEST_KEEP_LOGS"):
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "logs").glob("*.log")):
            parts.append(f"==== {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    # In-process access to the same database (admin operations, assertions) ----------
    @contextlib.contextmanager
    def settings_env(self) -> Iterator[None]:
        from service.config import reset_settings_cache

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        reset_settings_cache()
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            reset_settings_cache()

    def db(self, fn: Callable[[Any], Any]) -> Any:
        with self.settings_env():
            from service.db import session_scope

            with session_scope() as session:
                return fn(session)

    def create_team(self, prefix: str = "team") -> Team:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"

        def make(session: Any) -> Team:
            from service.tenants import service as tenants

            team = tenants.create_team(session, name)
            keys, key_ids = {}, {}
            for role in ("admin", "member", "viewer"):
                api_key, token = tenants.create_key(session, team.id, role, f"test {role}")
                keys[role], key_ids[role] = token, api_key.id
            return Team(team.id, name, keys, key_ids)

        return self.db(make)

    def client(self, key: str, **options: Any) -> OpenAI:
        options.setdefault("max_retries", 0)
        return OpenAI(base_url=f"{self.api_url}/v1", api_key=key, **options)

    def sandbox_client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.sandbox_url}/v1", api_key="inspector", max_retries=0)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
