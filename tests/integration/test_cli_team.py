"""The team CLI against a real stack: login, files upload, jobs create/follow/list/show/cancel,
models list — people's output and ``--json`` — and Ctrl-C during follow (the job goes on)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import CHAT_EXAMPLES, write_chat_dataset
from tests.integration.stack import Stack, Team, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-mini-2024-07-18"


def cli_env(config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTQ_", "OPENAI_", "SANDBOX_"))}
    return {**env, "FTQ_CONFIG": str(config), "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra}


def ftq(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def signed_in(stack: Stack, team: Team, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "ftq" / "config.json"
    env = cli_env(config)
    result = ftq(env, "login", "--url", stack.api_url, "--key", team.keys["member"])
    assert result.returncode == 0, result.stdout + result.stderr
    return env


def test_login_keeps_url_and_key_in_a_0600_file_and_refuses_a_bad_key(
    stack: Stack, team: Team, tmp_path: Path
) -> None:
    config = tmp_path / "cfg" / "config.json"
    env = cli_env(config)
    bad = ftq(env, "login", "--url", stack.api_url, "--key", "ftq_sk_not-a-key")
    assert bad.returncode == 1
    assert "error (401" in bad.stderr and "Traceback" not in bad.stderr
    assert not config.exists()

    good = ftq(env, "login", "--url", stack.api_url, "--key", team.keys["viewer"])
    assert good.returncode == 0, good.stderr
    assert "signed in to" in good.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved == {"base_url": f"{stack.api_url}/v1", "api_key": team.keys["viewer"]}

    # Without a login file, the SDK's usual environment variables work the same.
    env_only = cli_env(
        tmp_path / "none.json",
        OPENAI_BASE_URL=f"{stack.api_url}/v1",
        OPENAI_API_KEY=team.keys["viewer"],
    )
    listed = ftq(env_only, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    nothing = ftq(cli_env(tmp_path / "none.json"), "models", "list")
    assert nothing.returncode == 1 and "not signed in" in nothing.stderr


def test_files_upload_shows_the_verdict_and_top_findings(
    signed_in: dict[str, str], tmp_path: Path
) -> None:
    clean = write_chat_dataset(tmp_path / "clean.jsonl")
    result = ftq(signed_in, "files", "upload", str(clean))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uploaded file-" in result.stdout
    assert "verdict: pass" in result.stdout or "verdict: warn" in result.stdout

    broken = tmp_path / "broken.jsonl"
    rows = [
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
        for q, a in CHAT_EXAMPLES[:10]
    ]
    broken.write_text("\n".join([*rows, "{not json"]) + "\n")
    blocked = ftq(signed_in, "files", "upload", str(broken))
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "verdict: block" in blocked.stdout
    assert "invalid_json" in blocked.stdout
    line_11 = [
        row for row in blocked.stdout.splitlines() if "invalid_json" in row and " 11 " in f" {row} "
    ]
    assert line_11, blocked.stdout  # the finding's line number is in its table row

    as_json = ftq(signed_in, "files", "upload", str(broken), "--json")
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    assert body["file"]["id"].startswith("file-")
    assert body["validation"]["verdict"] == "block"
    assert {"line": 11, "code": "invalid_json"}.items() <= next(
        f for f in body["validation"]["report"]["findings"] if f["code"] == "invalid_json"
    ).items()


def _uploaded(env: dict[str, str], dataset: Path) -> str:
    result = ftq(env, "files", "upload", str(dataset), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return str(json.loads(result.stdout)["file"]["id"])


def test_jobs_create_follow_list_show_and_models(
    signed_in: dict[str, str], dataset: Path, stack: Stack, team: Team
) -> None:
    file_id = _uploaded(signed_in, dataset)
    created = ftq(
        signed_in,
        "jobs",
        "create",
        "--model",
        MODEL,
        "--training-file",
        file_id,
        "--suffix",
        "cli",
        "--metadata",
        "team=cli-test",
        "--follow",
        timeout=180,
    )
    output = created.stdout + created.stderr
    assert created.returncode == 0, output
    assert "created ftjob-" in created.stdout
    assert "status: running" in created.stdout
    assert "checkpoint at step" in created.stdout
    assert "succeeded: ft:" in created.stdout
    assert "loss " in created.stdout
    job_id = created.stdout.split("created ", 1)[1].split(":", 1)[0]
    assert stack.client(team.keys["member"]).fine_tuning.jobs.retrieve(job_id).status == "succeeded"

    again = ftq(signed_in, "jobs", "follow", job_id, "--json")
    assert again.returncode == 0, again.stderr
    lines = [json.loads(line) for line in again.stdout.splitlines()]
    assert lines[0]["type"] == "status" and lines[-1]["type"] == "job"
    assert lines[-1]["job"]["status"] == "succeeded"
    metrics = [e for e in lines if e["type"] == "event" and e["event"]["type"] == "metrics"]
    assert metrics and any(e["type"] == "checkpoint" for e in lines)

    listed = ftq(signed_in, "jobs", "list")
    assert listed.returncode == 0 and job_id in listed.stdout, listed.stdout
    listed_json = json.loads(ftq(signed_in, "jobs", "list", "--json").stdout)
    assert job_id in [j["id"] for j in listed_json]
    assert json.loads(ftq(signed_in, "jobs", "list", "--status", "failed", "--json").stdout) == []
    shown = json.loads(ftq(signed_in, "jobs", "show", job_id, "--json").stdout)
    assert shown["metadata"] == {"team": "cli-test"} and shown["stage"] == "done"

    models = ftq(signed_in, "models", "list")
    assert models.returncode == 0 and MODEL in models.stdout
    rows = json.loads(ftq(signed_in, "models", "list", "--json").stdout)
    mine = [m for m in rows if m.get("fine_tuning_job_id") == job_id]
    assert mine and mine[0]["id"] == shown["fine_tuned_model"]

    missing = ftq(signed_in, "jobs", "show", "ftjob-doesnotexist")
    assert missing.returncode == 1 and "error (404" in missing.stderr


def test_ctrl_c_during_follow_leaves_the_job_running_then_cancel(
    signed_in: dict[str, str], dataset: Path, stack: Stack, team: Team
) -> None:
    file_id = _uploaded(signed_in, dataset)
    client = stack.client(team.keys["member"])
    # Slow steps (about two seconds each): the job still runs when follow is interrupted.
    with stack.sandbox.configured(
        step_seconds=8.0, max_running_seconds=4000.0, max_steps_per_epoch=10
    ):
        created = ftq(
            signed_in, "jobs", "create", "--model", MODEL, "--training-file", file_id, "--json"
        )
        assert created.returncode == 0, created.stderr
        job_id = json.loads(created.stdout)["id"]
        wait_for(
            lambda: client.fine_tuning.jobs.retrieve(job_id).status == "running",
            timeout=60,
            what="the job to run",
        )
    follower = subprocess.Popen(
        [sys.executable, "-m", "cli", "jobs", "follow", job_id, "--interval", "0.5"],
        cwd=REPO,
        env=signed_in,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follower.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(
            lambda: any("status: running" in line for line in seen),
            timeout=30,
            what="follow to show the running job",
        )
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 130
    finally:
        if follower.poll() is None:
            follower.kill()
        reader.join(timeout=5)
    text = "".join(seen)
    assert "keeps running" in text and "Traceback" not in text
    time.sleep(1.5)
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "running", job.status  # following stopped; the job did not

    cancelled = ftq(signed_in, "jobs", "cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["id"] == job_id
    followed = ftq(signed_in, "jobs", "follow", job_id, "--timeout", "60", timeout=90)
    assert followed.returncode == 3, followed.stdout + followed.stderr
    assert "cancelled" in followed.stdout


def test_evals_list_and_show(signed_in: dict[str, str], stack: Stack, team: Team) -> None:
    client = stack.client(team.keys["member"])
    created = client.evals.create(
        name="cli-eval",
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[
            {
                "type": "string_check",
                "name": "exact",
                "input": "{{item.question}}",
                "reference": "{{item.answer}}",
                "operation": "eq",
            }
        ],
    )
    run = client.evals.runs.create(
        created.id,
        data_source={
            "type": "jsonl",
            "source": {
                "type": "file_content",
                "content": [{"item": {"question": "q", "answer": "q"}}],
            },
        },
    )
    ids = {"eval_id": created.id, "run_id": run.id}
    listed = ftq(signed_in, "evals", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert ids["eval_id"] in [e["id"] for e in json.loads(listed.stdout)]
    table = ftq(signed_in, "evals", "list")
    assert ids["eval_id"] in table.stdout and "exact" in table.stdout
    shown = ftq(signed_in, "evals", "show", ids["eval_id"])
    assert shown.returncode == 0, shown.stderr
    assert ids["run_id"] in shown.stdout
    body = json.loads(ftq(signed_in, "evals", "show", ids["eval_id"], "--json").stdout)
    assert [r["id"] for r in body["runs"]] == [ids["run_id"]]
    missing = ftq(signed_in, "evals", "show", "eval_doesnotexist")
    assert missing.returncode == 1 and "error (404" in missing.stderr
