"""Starting and stopping ftq's processes (used by ``ftq dev``, ``ftq demo`` and the tests).

Every child runs in its own session so a stop reaches its whole tree (Celery's pool
children included): SIGTERM first, SIGKILL for whatever is still alive after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:app",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def worker_command(
    name: str = "worker", concurrency: int = 2, queues: str = "ftq,evals"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "-Q",
        queues,
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def beat_command() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "INFO"]


def sandbox_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "sandbox", "--host", host, "--port", str(port)]


@dataclass
class ProcessGroup:
    env: Mapping[str, str]
    log_dir: Path | None = None
    cwd: Path | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self, name: str, command: list[str], extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, **(extra_env or {})}
        stdout: int | object = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stdout = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=self.cwd,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
        )
        self.children[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.children.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self, name: str, grace: float = 10.0) -> None:
        proc = self.children.pop(name, None)
        if proc is None:
            return
        _terminate(proc, grace)

    def stop_all(self, grace: float = 10.0) -> None:
        # Stop in reverse start order: producers (beat) before consumers.
        for name in reversed(list(self.children)):
            self.stop(name, grace)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # Whatever survived in the group (pool children, reloaders) goes now.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
