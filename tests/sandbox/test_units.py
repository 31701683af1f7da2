"""In-process tests of the pure parts: planning, parsing, config, similarity, a fake clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from sandbox.config import SandboxConfig
from sandbox.datasets import DataError, parse_dataset
from sandbox.lifecycle import default_epochs, plan_job
from sandbox.models import best_answer
from sandbox.pagination import cursor_page
from sandbox.state import Store
from sandbox.validation import validate_job_request
from tests.sandbox.conftest import QA, _free_port, chat_jsonl

REPO = Path(__file__).resolve().parents[2]


def _dataset(content: bytes = chat_jsonl(), method: str = "supervised", model: str = "gpt-4o"):
    return parse_dataset(
        content, label="Training file", method=method, base_model=model, min_examples=10
    )


def _plan(config: SandboxConfig, seed: int = 3):
    return plan_job(
        job_id="ftjob-x",
        fine_tuned_model="ft:gpt-4o:sandbox::abc",
        training_file="file-x",
        validation_file=None,
        dataset=_dataset(),
        data_error=None,
        hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0},
        seed=seed,
        fail_code=None,
        config=config,
    )


def test_default_epochs_cookbook_rule() -> None:
    assert default_epochs(5) == 20
    assert default_epochs(10) == 10
    assert default_epochs(100) == 3
    assert default_epochs(10_000) == 2
    assert default_epochs(1_000_000) == 1


def test_plan_is_deterministic_and_scaled_by_job_speed() -> None:
    config = SandboxConfig(validating_seconds=2, queued_seconds=2, step_seconds=1)
    slow, same = _plan(config), _plan(config)
    assert slow == same
    fast = _plan(config.updated({"job_speed": 4}))
    # 12 examples / batch 4 = 3 steps per epoch, 3 epochs.
    assert slow.total_steps == fast.total_steps == 9
    assert slow.running_at == 4 and fast.running_at == 1
    assert slow.end_at == 4 + 9 and fast.end_at == pytest.approx(13 / 4)
    losses = [row["train_loss"] for row in slow.metrics_rows]
    assert losses[-1] < losses[0] / 3
    assert [m.checkpoint_step for m in slow.milestones if m.checkpoint_step] == [3, 6, 9]
    assert _plan(config, seed=4).metrics_rows != slow.metrics_rows


def test_running_phase_is_capped() -> None:
    config = SandboxConfig(step_seconds=5, max_running_seconds=3, steps_per_epoch=10)
    plan = _plan(config)
    assert plan.total_steps == 30
    assert plan.end_at - plan.running_at == pytest.approx(3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe", "not valid UTF-8"),
        (chat_jsonl() + b"[1, 2]\n", "line 13: expected a JSON object"),
        (
            chat_jsonl() + b'{"messages": [{"role": "robot", "content": "x"}]}\n',
            "line 13: message 0 has an unrecognized role 'robot'",
        ),
        (
            chat_jsonl()
            + json.dumps(
                {"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant"}]}
            ).encode(),
            "line 13: message 0 has an invalid 'weight'",
        ),
    ],
)
def test_parse_errors_name_the_line(content: bytes, message: str) -> None:
    with pytest.raises(DataError) as caught:
        _dataset(content)
    assert message in str(caught.value)


def test_dpo_examples_parse_and_need_dpo_method() -> None:
    line = {
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hi!"}],
        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
    }
    content = (json.dumps(line) + "\n").encode() * 10
    dataset = _dataset(content, method="dpo", model="gpt-4.1-2025-04-14")
    assert dataset.format == "preference" and dataset.examples[0].answer == "Hi!"
    with pytest.raises(DataError, match="only valid for method type 'dpo'"):
        _dataset(content)
    with pytest.raises(DataError, match="DPO jobs need"):
        _dataset(chat_jsonl(), method="dpo")


def test_best_answer_prefers_content_words() -> None:
    examples = _dataset().examples
    assert best_answer(examples, "how many keys on a piano") == "A standard piano has 88 keys."
    assert best_answer(examples, "capital city of france") == QA[3][1]
    assert best_answer((), "anything").startswith("This is a generic answer")


def test_cursor_page_has_more_is_exact() -> None:
    items = ["a", "b", "c", "d"]
    assert cursor_page(items, after=None, limit=4, key=str) == (items, False)
    assert cursor_page(items, after=None, limit=3, key=str) == (["a", "b", "c"], True)
    assert cursor_page(items, after="c", limit=3, key=str) == (["d"], False)
    assert cursor_page(items, after="d", limit=3, key=str) == ([], False)
    assert cursor_page(items, after="zz", limit=3, key=str) == ([], False)


def test_config_from_env() -> None:
    config = SandboxConfig.from_env(
        {
            "SANDBOX_JOB_SPEED": "2.5",
            "SANDBOX_REFUSE_NEW_JOBS": "true",
            "SANDBOX_FAULT_PATHS": "^/v1/files",
            "SANDBOX_FINE_TUNABLE_MODELS": "gpt-4o-mini, babbage-002",
            "SANDBOX_MAX_ACTIVE_JOBS": "3",
            "SANDBOX_FAULT_SEED": "",
        }
    )
    assert config.job_speed == 2.5 and config.refuse_new_jobs is True
    assert config.fault_paths == "^/v1/files" and config.max_active_jobs == 3
    assert config.fine_tunable_models == ["gpt-4o-mini", "babbage-002"]
    assert config.fault_seed is None


def test_store_lifecycle_on_a_fake_clock() -> None:
    now = [1_000_000.0]
    config = SandboxConfig(validating_seconds=10, queued_seconds=10, step_seconds=1)
    store = Store(config, clock=lambda: now[0])
    file_id = store.add_file(chat_jsonl(), "t.jsonl", "fine-tune")["id"]
    request = validate_job_request(
        {
            "model": "gpt-4o-mini",
            "training_file": file_id,
            "hyperparameters": {"n_epochs": 2, "batch_size": 4},
        }
    )
    job = store.create_job(request, "acme")
    assert job["status"] == "validating_files"
    now[0] += 10
    assert store.get_job(job["id"])["status"] == "queued"
    now[0] += 10
    running = store.get_job(job["id"])
    assert running["status"] == "running"
    assert running["estimated_finish"] == int(now[0]) + 6  # 2 epochs * 3 steps * 1 s
    now[0] += 3
    store.pause_job(job["id"])
    now[0] += 1000
    assert store.get_job(job["id"])["status"] == "paused"
    resumed = store.resume_job(job["id"])
    assert resumed["status"] == "queued"
    now[0] += 10  # the re-queue wait
    assert store.get_job(job["id"])["status"] == "running"
    now[0] += 3
    done = store.get_job(job["id"])
    assert done["status"] == "succeeded"
    assert done["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:acme::")
    assert done["finished_at"] == int(now[0])
    events, _ = store.list_events(job["id"], after=None, limit=100)
    steps = [e["data"]["step"] for e in events if e["type"] == "metrics"]
    assert steps == [6, 5, 4, 3, 2, 1]
    # Steps after the pause are stamped after the 1000 s pause, earlier ones before it.
    times = {e["data"]["step"]: e["created_at"] for e in events if e["type"] == "metrics"}
    assert times[4] - times[3] > 1000


def test_python_dash_m_sandbox_serves() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SANDBOX_QUEUED_SECONDS": "7"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), "--job-speed", "3"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                config = httpx2.get(f"http://127.0.0.1:{port}/sandbox/config").json()
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert config["job_speed"] == 3 and config["queued_seconds"] == 7
    finally:
        process.terminate()
        process.wait(timeout=10)
