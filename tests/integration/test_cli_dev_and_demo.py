"""The README's promises about `ftq dev` and `ftq demo`, on the embedded default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cli.processes import free_port
from tests.integration.stack import wait_for


def _children_with_data_dir(data_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"FTQ_DATA_DIR={data_dir}".encode() in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def clean_env() -> dict[str, str]:
    # The demo and dev must need nothing from the environment: no database, broker or key.
    return {k: v for k, v in os.environ.items() if not k.startswith(("FTQ_", "SANDBOX_"))}


def test_dev_runs_everything_and_stops_with_all_its_children(tmp_path: Path) -> None:
    data_dir = (tmp_path / "data").resolve()
    command = [
        sys.executable,
        "-m",
        "cli",
        "dev",
        "--quiet",
        "--data-dir",
        str(data_dir),
        "--port",
        str(free_port()),
        "--sandbox-port",
        str(free_port()),
    ]
    dev = subprocess.Popen(
        command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        env_file = data_dir / "dev.env"
        wait_for(env_file.exists, timeout=90, what="dev.env")
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert values["FTQ_API_URL"].endswith("/v1")
        assert values["FTQ_SANDBOX_URL"].endswith("/v1")
        assert values["FTQ_API_KEY"].startswith("ftq_sk_")
        from openai import OpenAI

        client = OpenAI(
            base_url=values["FTQ_API_URL"], api_key=values["FTQ_API_KEY"], max_retries=0
        )
        assert client.fine_tuning.jobs.list().data == []
        sandbox = OpenAI(base_url=values["FTQ_SANDBOX_URL"], api_key="x", max_retries=0)
        assert sandbox.fine_tuning.jobs.list().data == []
        assert (data_dir / "ftq.db").exists()  # SQLite under the data folder
        children = _children_with_data_dir(data_dir)
        assert len(children) >= 4  # sandbox, api, worker (+ pool), beat
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
    assert dev.returncode == 0, dev.stdout.read().decode() if dev.stdout else ""
    deadline = time.monotonic() + 10
    while _children_with_data_dir(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _children_with_data_dir(data_dir) == []
    assert not (data_dir / "dev.env").exists()


def test_demo_runs_the_articles_four_steps_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--timeout", "120"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for step in ("1. prepared", "2. uploaded: file-", "3. fine-tuning job ftjob-", "4. asked"):
        assert step in output
    assert "the fine-tuned model answered 'ftq stands for fine-tuning queue.'" in output
    assert "demo succeeded" in output


def test_demo_exits_non_zero_when_a_step_fails() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "demo",
            "--url",
            f"http://127.0.0.1:{free_port()}/v1",
            "--key",
            "x",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "step failed: APIConnectionError" in result.stderr


def _dev_command(data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cli",
        "dev",
        "--data-dir",
        str(data_dir),
        "--port",
        str(free_port()),
        "--sandbox-port",
        str(free_port()),
        *extra,
    ]


def _read_dev_env(data_dir: Path) -> dict[str, str]:
    env_file = data_dir / "dev.env"
    wait_for(env_file.exists, timeout=90, what="dev.env")
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines())


def test_dev_summary_comes_last_its_key_survives_restarts_and_kill_9_takes_children(
    tmp_path: Path,
) -> None:
    data_dir = (tmp_path / "data").resolve()
    dev = subprocess.Popen(
        _dev_command(data_dir), env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines: list[str] = []

    def read() -> None:
        assert dev.stdout is not None
        for raw in dev.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = _read_dev_env(data_dir)
        wait_for(
            lambda: any("settings for clients:" in line for line in lines),
            timeout=90,
            what="the summary",
        )
        summary = next(i for i, line in enumerate(lines) if "ftq is running at" in line)
        # The workers' banners (prefixed with their names) come before the summary.
        worker_ready = next(
            i for i, line in enumerate(lines) if line.startswith("worker") and "ready." in line
        )
        beat_ready = next(
            i for i, line in enumerate(lines) if line.startswith("beat") and "Starting" in line
        )
        assert worker_ready < summary and beat_ready < summary, "\n".join(lines)
        assert first["FTQ_API_KEY"] in lines[summary + 1]
        assert len(_children_with_data_dir(data_dir)) >= 4
    finally:
        # SIGKILL: no handler runs, yet every child must go (PR_SET_PDEATHSIG).
        dev.kill()
        dev.wait(timeout=30)
    wait_for(
        lambda: _children_with_data_dir(data_dir) == [],
        timeout=60,
        what="the children of a SIGKILLed ftq dev to exit",
    )

    # A restart reuses the admin key kept in the data folder, and it still works.
    (data_dir / "dev.env").unlink(missing_ok=True)  # left by the killed run
    again = subprocess.Popen(
        _dev_command(data_dir, "--quiet"),
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        second = _read_dev_env(data_dir)
        assert second["FTQ_API_KEY"] == first["FTQ_API_KEY"]
        assert oct((data_dir / "dev-admin.key").stat().st_mode & 0o777) == "0o600"
        from openai import OpenAI

        client = OpenAI(base_url=second["FTQ_API_URL"], api_key=second["FTQ_API_KEY"])
        assert client.fine_tuning.jobs.list().data == []
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=60)
    assert again.returncode == 0
    wait_for(lambda: _children_with_data_dir(data_dir) == [], timeout=30, what="clean stop")
