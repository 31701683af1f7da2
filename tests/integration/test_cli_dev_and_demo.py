"""The README's promises about `ftq dev` and `ftq demo`, on the embedded default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
