"""``ftq dev`` (everything in one command) and the single-process commands it is made of."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.main import main
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

if TYPE_CHECKING:
    from service.config import Settings


def _use_data_dir(data_dir: Path | None) -> None:
    from service.config import reset_settings_cache

    if data_dir is not None:
        os.environ["FTQ_DATA_DIR"] = str(data_dir.resolve())
        reset_settings_cache()


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides FTQ_DATA_DIR.")
def migrate(data_dir: Path | None) -> None:
    """Apply database migrations."""
    _use_data_dir(data_dir)
    from migrations import upgrade
    from service.config import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    click.echo("migrations applied")


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="API processes on the one port (uvicorn --workers). More than one needs Redis as "
    "the broker: the per-key rate limits are kept there, shared by every process.",
)
def api(host: str, port: int, workers: int) -> None:
    """Run the API server."""
    command = api_command(host, port)
    if workers > 1:
        from service.config import get_settings

        if not get_settings().resolved_broker_url.startswith(("redis://", "rediss://")):
            # Without Redis each process would keep its own rate-limit counts: N x the limit.
            raise click.UsageError("--workers above 1 needs FTQ_BROKER_URL=redis://...")
        command += ["--workers", str(workers)]
    os.execv(sys.executable, command)


@main.command()
@click.option("--concurrency", type=int, default=2, show_default=True)
@click.option(
    "--queues",
    default=ALL_QUEUES,
    show_default=True,
    help=f"Production runs one worker on {CONTROL_QUEUES} (submissions, the sweep) beside "
    f"others on {FOLLOW_QUEUES} (polls and everything else), so polls never take the "
    "submissions' slots.",
)
@click.option("--name", default="worker", show_default=True, help="Celery node name prefix.")
def worker(concurrency: int, queues: str, name: str) -> None:
    """Run a Celery worker."""
    os.execv(sys.executable, worker_command(name=name, concurrency=concurrency, queues=queues))


@main.command()
def beat() -> None:
    """Run the Celery beat scheduler (sweeper and reconcilers). Run exactly one."""
    os.execv(sys.executable, beat_command())


DEV_KEY_FILE = "dev-admin.key"
# Celery's and beat's start-up banners end with these lines; the summary waits for them.
WORKER_READY = "ready."
BEAT_READY = "beat: Starting"
BANNER_WAIT_SECONDS = 60.0
API_READY_SECONDS = 120.0


def _still_valid(token: str, team_id: str) -> bool:
    """The stored key still opens the dev team as admin (not revoked, same secret key)."""
    from sqlmodel import select

    from service.config import get_settings
    from service.db import session_scope, utcnow
    from service.tenants import keys
    from service.tenants.models import ApiKey

    if not keys.looks_like_key(token):
        return False
    digest = keys.hash_key(token, get_settings().secret_key.get_secret_value())
    with session_scope() as session:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
        return (
            row is not None
            and row.team_id == team_id
            and row.role == "admin"
            and (row.revoked_at is None or row.revoked_at > utcnow())
        )


def _dev_admin_key(data: Path) -> tuple[str, bool]:
    """The dev team's admin key, kept in the data folder so restarts reuse it (and clients
    holding var/dev.env keep working); a new one only when it is missing or no longer valid.
    Returns (key, reused)."""
    from service.db import session_scope
    from service.errors import NotFound
    from service.tenants import service as tenants

    with session_scope() as session:
        try:
            team = tenants.find_team(session, "dev")
        except NotFound:
            team = tenants.create_team(session, "dev")
        team_id = team.id
    stored = data / DEV_KEY_FILE
    if stored.exists():
        token = stored.read_text().strip()
        if _still_valid(token, team_id):
            return token, True
    with session_scope() as session:
        _, token = tenants.create_key(session, team_id, "admin", "ftq dev")
    stored.touch(mode=0o600)
    stored.chmod(0o600)
    stored.write_text(token + "\n")
    return token, False


def _start_local(group: ProcessGroup, settings: Settings) -> None:
    """The local provider's processes: a training worker (one run at a time) and, unless an
    external OpenAI-compatible server (e.g. vLLM) is configured, the inference server."""
    from cli.inference import inference_command

    group.start(
        "trainer",
        worker_command(name="trainer", concurrency=1, queues="training"),
        ready_line=WORKER_READY,
    )
    if settings.local.inference_url is None:
        group.start("inference", inference_command("127.0.0.1", settings.local.inference_port))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=int, default=8000, show_default=True, help="API port (0: any free port)."
)
@click.option("--sandbox-port", type=int, default=8765, show_default=True, help="0: any free port.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides FTQ_DATA_DIR.")
@click.option(
    "--quiet", is_flag=True, help="Send process logs to <data dir>/logs instead of the terminal."
)
def dev(host: str, port: int, sandbox_port: int, data_dir: Path | None, quiet: bool) -> None:
    """Run API, worker, beat and (without a provider key) the sandbox on the embedded default."""
    _use_data_dir(data_dir)
    from migrations import upgrade
    from service.config import get_settings
    from service.logging import configure_logging

    settings = get_settings()
    configure_logging(settings, process="dev")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    data = settings.data_dir.resolve()
    upgrade(settings.resolved_database_url)

    port = port or free_port()
    env: dict[str, str] = {"FTQ_DATA_DIR": str(data)}
    group = ProcessGroup(
        env=env, log_dir=data / "logs" if quiet else None, relay=True, die_with_parent=True
    )
    sandbox_url: str | None = None
    if settings.provider_api_key is None and settings.provider_base_url is None:
        sandbox_port = sandbox_port or free_port()
        sandbox_url = f"http://{host}:{sandbox_port}/v1"
        env["FTQ_PROVIDER_BASE_URL"] = sandbox_url
        group.start("sandbox", sandbox_command(host, sandbox_port))

    def shutdown(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    exit_code = 0
    try:
        if sandbox_url:
            wait_http_ok(f"http://{host}:{sandbox_port}/healthz", proc=group.children["sandbox"])
        api_proc = group.start("api", api_command(host, port))
        group.start("worker", worker_command(), ready_line=WORKER_READY)
        # Submissions and the sweep on slots of their own (no wait behind a poll backlog).
        group.start(
            "submitter",
            worker_command(
                name="submitter", concurrency=CONTROL_CONCURRENCY, queues=CONTROL_QUEUES
            ),
            ready_line=WORKER_READY,
        )
        group.start("beat", beat_command(), ready_line=BEAT_READY)
        if settings.local.allowed_base_models:
            _start_local(group, settings)
        # Generous: on a loaded machine the API starts beside three Celery processes.
        wait_http_ok(f"http://{host}:{port}/healthz", timeout=API_READY_SECONDS, proc=api_proc)
        key, reused = _dev_admin_key(data)
        api_url = f"http://{host}:{port}/v1"
        lines = [f"FTQ_API_URL={api_url}", f"FTQ_API_KEY={key}"]
        if sandbox_url:
            lines.append(f"FTQ_SANDBOX_URL={sandbox_url}")
        dev_env = data / "dev.env"
        dev_env.touch(mode=0o600)
        dev_env.chmod(0o600)
        dev_env.write_text("\n".join(lines) + "\n")
        # The summary comes last, after the workers' banners, where it is not scrolled away.
        for name in ("worker", "submitter", "beat", "trainer"):
            if name in group.children and not group.wait_ready(name, BANNER_WAIT_SECONDS):
                click.echo(f"{name} has not reported ready yet; see its output above", err=True)
        click.echo("")
        click.echo(f"ftq is running at {api_url}  (health: http://{host}:{port}/healthz)")
        click.echo(
            f"admin key (kept in {data / DEV_KEY_FILE}{', reused' if reused else ''}): {key}"
        )
        if sandbox_url:
            click.echo(f"sandbox upstream: {sandbox_url}")
        click.echo(f"settings for clients: {dev_env}   — stop with Ctrl-C")
        while True:
            for name, proc in group.children.items():
                if proc.poll() is not None:
                    click.echo(f"{name} exited with {proc.returncode}; stopping", err=True)
                    exit_code = 1
                    raise SystemExit(1)
            time.sleep(0.5)
    except SystemExit as stop:
        exit_code = exit_code or (
            0 if stop.code in (0, 128 + signal.SIGINT, 128 + signal.SIGTERM) else 1
        )
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        group.stop_all()
        (data / "dev.env").unlink(missing_ok=True)
    sys.exit(exit_code)
