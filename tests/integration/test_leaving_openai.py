"""Leaving OpenAI on real processes: a sandbox (OpenAI-shaped) fine-tune re-trained on ftq's
own workers by ``ftq models migrate`` (the operator's suggested target, idempotent), its
lineage and the eval comparison with its parent, and a provider past its job cut-off refused
at create. One private stack: a tiny local model, a training worker, the inference server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
from openai import OpenAI

from cli.inference import inference_command
from cli.processes import free_port, wait_http_ok, worker_command
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_auth_and_isolation import assert_openai_error
from tests.integration.test_keys_and_audit import call
from tests.support.tiny_model import build_tiny_model, chat_examples, write_chat_dataset

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
]

BASE = "gpt-4o-mini-2024-07-18"
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class World:
    stack: Stack
    base: Path
    team: Team
    client: OpenAI
    train_path: Path
    train_file: str
    held_file: str
    eval_id: str


def _upload(client: OpenAI, path: Path) -> str:
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune").id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = tmp_path_factory.mktemp("leaving")
    base = build_tiny_model(folder / "base")
    port = free_port()
    stack = Stack(
        "leaving",
        extra_env={
            "HF_HUB_OFFLINE": "1",
            "FTQ_LOCAL__ALLOWED_BASE_MODELS": json.dumps({"tiny": str(base)}),
            "FTQ_LOCAL__TORCH_THREADS": "1",
            "FTQ_LOCAL__DEVICE": "cpu",
            "FTQ_LOCAL__CHECKPOINT_EVERY_STEPS": "40",
            "FTQ_LOCAL__CHECKPOINT_EACH_EPOCH": "false",
            "FTQ_LOCAL__INFERENCE_URL": f"http://127.0.0.1:{port}/v1",
            "FTQ_VALIDATION__MIN_EXAMPLES": "4",
            # Azure OpenAI is closed to new jobs in this deployment; OpenAI's own date stays.
            "FTQ_REGISTRY__PROVIDER_CUTOFFS": json.dumps(
                {"openai": "2027-01-06", "azure_openai": "2026-11-01"}
            ),
            "FTQ_REGISTRY__REPLACEMENTS": json.dumps({"gpt-4o-mini": "local:tiny"}),
        },
    )
    try:
        stack.start(workers=1)
        stack.group.start(
            "trainer0",
            worker_command(name=f"trainer0-{stack.name}", concurrency=1, queues="training"),
        )
        inference = stack.group.start("inference", inference_command("127.0.0.1", port))
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=inference)
        team = stack.create_team("leaving")
        client = stack.client(team.keys["member"])
        examples = chat_examples()[:10]
        train_path = write_chat_dataset(folder / "train.jsonl", examples)
        train_file = _upload(client, train_path)
        # The held-out file repeats six training questions: both models should know them.
        held_file = _upload(client, write_chat_dataset(folder / "held.jsonl", examples[:6]))
        template: Any = client.post(
            "/evals/templates",
            cast_to=object,
            body={"template": "question_answering", "file_id": held_file},
        )
        yield World(stack, base, team, client, train_path, train_file, held_file, template["id"])
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def _ftq(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"{world.stack.api_url}/v1",
        "OPENAI_API_KEY": world.team.keys["member"],
        "FTQ_CONFIG": "/nonexistent/ftq.json",
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _recorded(world: World, job_id: str) -> dict[str, Any] | None:
    body: Any = world.client.get(f"/fine_tuning/jobs/{job_id}/evaluation", cast_to=object)
    return body["evaluation"] if body["status"] == "recorded" else None


def test_a_provider_past_its_cutoff_is_refused_at_create(world: World) -> None:
    stack, admin = world.stack, world.team.keys["admin"]
    status, body, _ = call(
        stack,
        "PUT",
        "/v1/provider_credentials",
        admin,
        {
            "provider": "azure_openai",
            "api_key": "azkey-cutoff-0123456789abcdef",
            "endpoint": stack.sandbox_url,
            "api_version": "2024-10-21",
        },
    )
    assert status == 200, body
    jobs_before = len(world.client.fine_tuning.jobs.list().data)

    def job_traffic() -> int:
        # Files uploaded by the fixture may still be screened (moderations); jobs and
        # uploads are what a refused create must never send.
        return sum(1 for r in stack.sandbox.requests() if "moderations" not in r["path"])

    requests_before = job_traffic()
    try:
        status, body, _ = call(
            stack,
            "POST",
            "/v1/fine_tuning/jobs",
            world.team.keys["member"],
            {"model": BASE, "training_file": world.train_file},
        )
    finally:
        assert call(stack, "DELETE", "/v1/provider_credentials", admin)[0] == 200
    error = assert_openai_error(body, type_="invalid_request_error")
    assert status == 400 and error["code"] == "provider_unavailable"
    assert error["param"] == "provider" and "2026-11-01" in error["message"]
    assert "local" in error["message"]  # the alternatives
    assert len(world.client.fine_tuning.jobs.list().data) == jobs_before
    assert job_traffic() == requests_before


def test_migrate_retrains_on_local_with_lineage_and_comparison(world: World) -> None:
    client = world.client
    parent = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=world.train_file,
        validation_file=world.held_file,
        suffix="orig",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 40,
                    "batch_size": 5,
                    "learning_rate_multiplier": 2.0,
                }
            },
        },
        extra_body={"evaluation": {"eval_id": world.eval_id, "gate": {"criterion": "exact_match"}}},
    )
    wait_for(lambda: _recorded(world, parent.id), timeout=180, what="parent's gate")
    parent = client.fine_tuning.jobs.retrieve(parent.id)
    assert parent.status == "succeeded" and parent.fine_tuned_model

    # The plan suggests the operator's replacement.
    plan: Any = client.get(
        "/migration_plan", cast_to=object, options={"params": {"within_days": 60}}
    )
    item = next(i for i in plan["data"] if i["fine_tuning_job_id"] == parent.id)
    assert item["suggested_target"] == {"provider": "local", "model": "tiny"}
    assert item["status"] == "pending"

    dry = _ftq(world, "models", "migrate", "--before", "2027-01-14", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert [r["action"] for r in json.loads(dry.stdout)] == ["would_create"]
    assert len(client.fine_tuning.jobs.list().data) == 1

    first = _ftq(world, "models", "migrate", "--before", "2027-01-14", "--json")
    assert first.returncode == 0, first.stderr
    (created,) = json.loads(first.stdout)
    assert created["action"] == "created" and created["provider"] == "local"
    second = _ftq(world, "models", "migrate", "--before", "2027-01-14")
    assert second.returncode == 0, second.stderr
    assert "already" in second.stdout and "[1/1]" in second.stdout
    assert len(client.fine_tuning.jobs.list().data) == 2  # nothing new the second time

    child_id = created["job"]
    child = client.fine_tuning.jobs.retrieve(child_id)
    assert child.model == "tiny" and child.training_file == world.train_file
    assert child.validation_file == world.held_file and child.seed == parent.seed
    assert child.method is not None and child.method.type == "lora"  # supervised -> lora
    assert (child.model_extra or {})["provider"] == "local"
    wait_for(lambda: _recorded(world, child_id), timeout=300, what="child's gate")
    child = client.fine_tuning.jobs.retrieve(child_id)
    assert child.status == "succeeded" and child.fine_tuned_model

    entry: Any = client.get(f"/models/{child.fine_tuned_model}", cast_to=object)
    assert entry["parent"]["fine_tuning_job_id"] == parent.id
    assert entry["provider"] == "local" and entry["shutdown_date"] is None
    lineage = entry["lineage"]
    assert lineage["method"]["lora"]["hyperparameters"] == {
        "n_epochs": 40,
        "batch_size": 5,
        "learning_rate_multiplier": 2.0,
    }
    comparison = lineage["comparison_with_parent"]
    assert comparison["parent_model"] == parent.fine_tuned_model
    assert comparison["model"] == child.fine_tuned_model and comparison["items"] == 6
    interval = comparison["confidence_interval"]
    assert interval["level"] == 0.95 and interval["low"] <= comparison["delta"] <= interval["high"]
    assert comparison["parent_mean_score"] == 1.0  # the sandbox fine-tune knows its data

    plan = client.get("/migration_plan", cast_to=object, options={"params": {"within_days": 60}})
    item = next(i for i in plan["data"] if i["fine_tuning_job_id"] == parent.id)
    assert item["status"] == "migrated"


def test_local_adapter_downloads_and_loads_with_peft(world: World, tmp_path: Path) -> None:
    """The re-trained LoRA's weights come back as a result file (a tar of the PEFT adapter,
    its sha256 on the file object); loaded with plain transformers + peft onto the base, it
    answers exactly as ftq's inference server does."""
    import hashlib
    import tarfile

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client = world.client
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=world.train_file,
        suffix="export",
        extra_body={
            "provider": "local",
            "method": {
                "type": "lora",
                "lora": {
                    "hyperparameters": {
                        "n_epochs": 40,
                        "batch_size": 5,
                        "learning_rate_multiplier": 2.0,
                    }
                },
            },
        },
    )
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j,
        timeout=300,
        what="the LoRA job",
    )
    assert done.status == "succeeded", done.error
    records = {client.files.retrieve(f).filename: f for f in done.result_files}
    assert set(records) == {"step_metrics.csv", f"{job.id}-adapter.tar"}
    metrics = client.files.content(records["step_metrics.csv"]).text.splitlines()
    assert metrics[0] == "step,train_loss,valid_loss,learning_rate,tokens"
    assert len(metrics) == 1 + 80 and metrics[-1].startswith("80,")
    result_id = records[f"{job.id}-adapter.tar"]
    record = client.files.retrieve(result_id)
    assert record.purpose == "fine-tune-results" and record.filename == f"{job.id}-adapter.tar"
    content = client.files.content(result_id).read()
    assert len(content) == record.bytes
    assert hashlib.sha256(content).hexdigest() == (record.model_extra or {})["sha256"]
    archive = tmp_path / "adapter.tar"
    archive.write_bytes(content)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    assert {f"{job.id}/adapter_model.safetensors", f"{job.id}/adapter_config.json"} <= names
    adapter = tmp_path / job.id

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world.base), adapter)
    model.eval()
    answers: dict[str, str] = {}
    for message in chat_examples()[:4]:
        question = message["messages"][0]["content"]
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(
                **encoded,
                max_new_tokens=16,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        ours = tokenizer.decode(
            output[0, encoded["input_ids"].shape[1] :].tolist(),
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        served = client.chat.completions.create(
            model=done.fine_tuned_model,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": question}],
            max_tokens=16,
            temperature=0,
        )
        assert served.choices[0].message.content == ours, question
        answers[question] = ours

    # Its checkpoints answer too (materialised on first call); the last one holds the final
    # weights, so it answers as the fine-tuned model does.
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    last = max(checkpoints, key=lambda c: c.step_number)
    assert last.step_number == 80, [c.step_number for c in checkpoints]
    for question, answer in answers.items():
        reply = client.chat.completions.create(
            model=last.fine_tuned_model_checkpoint,
            messages=[{"role": "user", "content": question}],
            max_tokens=16,
            temperature=0,
        )
        assert reply.choices[0].message.content == answer, question
    earliest = min(checkpoints, key=lambda c: c.step_number)
    reply = client.chat.completions.create(
        model=earliest.fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=4,
    )
    assert reply.choices[0].message.role == "assistant"

    # The lineage lists the weights among the job's result files.
    entry: Any = client.get(f"/models/{done.fine_tuned_model}", cast_to=object)
    assert entry["lineage"]["fine_tuning_job_id"] == job.id
    listed = next(f for f in entry["lineage"]["result_files"] if f["id"] == result_id)
    assert listed["id"] == result_id and listed["sha256"] == hashlib.sha256(content).hexdigest()
