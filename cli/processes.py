"""Starting and stopping ftq's processes (used by ``ftq dev``, ``ftq demo`` and the tests).

Every child runs in its own session so a stop reaches its whole tree (Celery's pool
children included): SIGTERM to every child at once, then SIGKILL for whatever is still
alive after one shared grace period.

``die_with_parent`` (Linux) starts each child through a small shim that sets
``PR_SET_PDEATHSIG`` before exec'ing the real command, so the children get SIGTERM even
when their parent is SIGKILLed and has no chance to stop them; SIGTERM (not SIGKILL) so a
Celery worker still takes its pool down with it. ``relay`` pipes each child's output
through this process, line by line, prefixed with its name (or into ``<log_dir>/<name>.log``),
which is what lets a caller wait for a child's ready line before printing its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from service import broker


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


# The worker layout. Following work (per-job polls, file validation, webhooks, evals) goes
# to FOLLOW_QUEUES; a user's submission and the sweep go to CONTROL_QUEUES, which a worker of
# their own consumes so its slots are never taken by a backlog of polls (service/broker.py
# routes each task). ``ftq dev``, the compose file and the test stack all run both.
FOLLOW_QUEUES = f"{broker.DEFAULT_QUEUE},{broker.EVALS_QUEUE}"
CONTROL_QUEUES = f"{broker.SUBMIT_QUEUE},{broker.SWEEP_QUEUE}"
# One worker serving everything (``ftq worker`` without --queues): a small install still
# runs every task; the queues still keep a submission out of the polls' backlog.
ALL_QUEUES = f"{CONTROL_QUEUES},{FOLLOW_QUEUES}"
CONTROL_CONCURRENCY = 2


def worker_command(
    name: str = "worker", concurrency: int = 2, queues: str = FOLLOW_QUEUES
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


# Runs in the child before the real command: a parent that died before prctl took effect
# is caught by comparing the parent pid with the one that started us.
_DIE_WITH_PARENT_SHIM = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


@dataclass
class ProcessGroup:
    env: Mapping[str, str]
    log_dir: Path | None = None
    cwd: Path | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    relay: bool = False
    die_with_parent: bool = False
    _ready: dict[str, threading.Event] = field(default_factory=dict)
    _output_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(
        self,
        name: str,
        command: list[str],
        extra_env: Mapping[str, str] | None = None,
        *,
        ready_line: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command``; with ``relay``, ``wait_ready(name)`` waits for ``ready_line``."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        sink: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            sink = (self.log_dir / f"{name}.log").open("ab")
        if self.die_with_parent and sys.platform == "linux":
            command = [sys.executable, "-c", _DIE_WITH_PARENT_SHIM, str(os.getpid()), *command]
        stdout: IO[bytes] | int | None = subprocess.PIPE if self.relay else sink
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=self.cwd,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
        )
        self.children[name] = proc
        self._ready[name] = threading.Event()
        if self.relay:
            threading.Thread(
                target=self._relay,
                args=(name, proc, sink, ready_line.encode() if ready_line else None),
                name=f"relay-{name}",
                daemon=True,
            ).start()
        return proc

    def _relay(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        sink: IO[bytes] | None,
        ready_line: bytes | None,
    ) -> None:
        assert proc.stdout is not None
        out = sink or sys.stdout.buffer
        prefix = b"" if sink is not None else f"{name:<9}| ".encode()
        for line in proc.stdout:
            if ready_line is not None and ready_line in line:
                self._ready[name].set()
            with self._output_lock, contextlib.suppress(OSError, ValueError):
                out.write(prefix + line)
                out.flush()

    def wait_ready(self, name: str, timeout: float) -> bool:
        """Whether ``name`` printed its ready line within ``timeout`` seconds."""
        proc, event = self.children.get(name), self._ready.get(name)
        deadline = time.monotonic() + timeout
        while event is not None and proc is not None and time.monotonic() < deadline:
            if event.wait(0.2):
                return True
            if proc.poll() is not None:
                return False
        return event is not None and event.is_set()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.children.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self, name: str, grace: float = 10.0) -> None:
        proc = self.children.pop(name, None)
        if proc is None:
            return
        _terminate([proc], grace)

    def stop_all(self, grace: float = 10.0) -> None:
        """Every child at once: one grace period for all, not one per child."""
        procs = [self.children.pop(name) for name in reversed(list(self.children))]
        _terminate(procs, grace)


def _terminate(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    # Whatever survived in the groups (pool children, reloaders) goes now.
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
