"""The local provider end to end: a tiny model fine-tuned by ftq's own training worker.

One private stack (Postgres, Redis, API, a worker on the ordinary queue, beat), plus a
training worker (``-Q training --concurrency 1``) and the inference server as processes.
Everything goes through the official ``openai`` SDK; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
import openai
from openai import OpenAI

from cli.inference import inference_command
from cli.processes import free_port, wait_http_ok, worker_command
from tests.integration.stack import Stack, Team, wait_for
from tests.support.tiny_model import (
    QA_PAIRS,
    build_tiny_model,
    chat_examples,
    preference_examples,
    write_chat_dataset,
)

pytestmark = [
    pytest.mark.integration,
    # peft 0.21 still reads a property transformers 5 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
]

# 10 examples, batch 5: 2 steps per epoch, 80 steps at twice the base learning rate. Enough
# for each method to reproduce the training answers on the tiny model in a few CPU seconds.
N_TRAIN = 10
BATCH = 5
EPOCHS = 40
LR_MULTIPLIER = 2.0
CHECKPOINT_EVERY = 40
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Local:
    stack: Stack
    base: Path
    base_sha256: str
    team: Team
    client: OpenAI
    train_file: str
    valid_file: str
    long_file: str
    trainer: str = "trainer0"
    base_replies: dict[str, str] = field(default_factory=dict)

    def final_dir(self, job_id: str) -> Path:
        return self.stack.root / "local-models" / job_id / "final"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _start_trainer(stack: Stack, name: str) -> None:
    stack.group.start(
        name, worker_command(name=f"{name}-{stack.name}", concurrency=1, queues="training")
    )


def _upload(client: OpenAI, path: Path) -> str:
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune").id


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    os.environ["HF_HUB_OFFLINE"] = "1"  # for the base-model replies computed in this process
    folder = tmp_path_factory.mktemp("local")
    base = build_tiny_model(folder / "base")
    port = free_port()
    stack = Stack(
        "local",
        extra_env={
            "HF_HUB_OFFLINE": "1",
            "FTQ_LOCAL__ALLOWED_BASE_MODELS": json.dumps({"tiny": str(base)}),
            "FTQ_LOCAL__TORCH_THREADS": "1",
            "FTQ_LOCAL__DEVICE": "cpu",
            "FTQ_LOCAL__CHECKPOINT_EVERY_STEPS": str(CHECKPOINT_EVERY),
            "FTQ_LOCAL__CHECKPOINT_EACH_EPOCH": "false",
            "FTQ_LOCAL__EVAL_EVERY_STEPS": "30",
            "FTQ_LOCAL__LEASE_SECONDS": "4",
            "FTQ_LOCAL__HEARTBEAT_SECONDS": "0.5",
            "FTQ_LOCAL__INFERENCE_URL": f"http://127.0.0.1:{port}/v1",
            "FTQ_LOCAL__MAX_PROCESSES": "2",
            "FTQ_MAX_ACTIVE_JOBS_PER_ACCOUNT": "5",
            # The validation file holds the 6 examples the training file leaves out.
            "FTQ_VALIDATION__MIN_EXAMPLES": "4",
        },
    )
    try:
        stack.start(workers=1)
        _start_trainer(stack, "trainer0")
        inference = stack.group.start("inference", inference_command("127.0.0.1", port))
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=inference)
        team = stack.create_team("local")
        client = stack.client(team.keys["member"])
        examples = chat_examples()
        local = Local(
            stack=stack,
            base=base,
            base_sha256=_sha256(base / "model.safetensors"),
            team=team,
            client=client,
            train_file=_upload(client, write_chat_dataset(folder / "t.jsonl", examples[:N_TRAIN])),
            valid_file=_upload(client, write_chat_dataset(folder / "v.jsonl", examples[N_TRAIN:])),
            long_file=_upload(client, write_chat_dataset(folder / "long.jsonl", examples)),
        )
        yield local
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def _create(
    local: Local,
    method: dict[str, Any],
    *,
    suffix: str,
    training_file: str | None = None,
    validation_file: str | None = None,
    resources: dict[str, Any] | None = None,
    **hyper: Any,
) -> Any:
    kind = method["type"]
    options = {k: v for k, v in method.items() if k != "type"}
    hyperparameters = {
        "n_epochs": EPOCHS,
        "batch_size": BATCH,
        "learning_rate_multiplier": LR_MULTIPLIER,
        **hyper,
    }
    extra_body: dict[str, Any] = {
        "provider": "local",
        "method": {"type": kind, kind: {"hyperparameters": hyperparameters, **options}},
    }
    if resources is not None:
        extra_body["resources"] = resources  # ftq's extension: processes per job
    return local.client.fine_tuning.jobs.create(
        model="tiny",
        training_file=training_file or local.train_file,
        validation_file=validation_file,
        suffix=suffix,
        # ftq's extensions: the provider, and methods OpenAI does not have.
        extra_body=extra_body,
    )


def _wait_done(local: Local, job_id: str, timeout: float = 120) -> Any:
    try:
        return wait_for(
            lambda: (
                (job := local.client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and job
            ),
            timeout=timeout,
            interval=0.25,
            what=f"job {job_id} to finish",
        )
    except AssertionError:
        print(local.stack.logs())
        raise


def _events(local: Local, job_id: str) -> list[Any]:
    """Every event of the job, oldest first (the API pages newest first)."""
    page = local.client.fine_tuning.jobs.list_events(job_id, limit=100)
    return list(reversed(list(page)))


def _train_losses(events: list[Any]) -> list[tuple[int, float]]:
    return [
        (e.data["step"], e.data["train_loss"])
        for e in events
        if e.type == "metrics" and e.data and "train_loss" in e.data
    ]


def _reply(local: Local, model: str, question: str) -> str:
    result = local.client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=16,
        temperature=0,
    )
    return result.choices[0].message.content or ""


def _base_reply(local: Local, question: str) -> str:
    """The base model's greedy answer, computed here: the base is no fine-tuned model, so
    ftq does not serve it."""
    if question not in local.base_replies:
        import torch

        from service.providers.local.inference import LocalModelCache, generate_chat

        torch.set_num_threads(1)
        cache = getattr(local, "_base_cache", None) or LocalModelCache(device="cpu")
        local._base_cache = cache  # type: ignore[attr-defined]
        reply = generate_chat(
            local.base,
            [{"role": "user", "content": question}],
            max_tokens=16,
            temperature=0,
            stream=False,
            cache=cache,
        )
        assert isinstance(reply, str)
        local.base_replies[question] = reply
    return local.base_replies[question]


def test_local_jobs_are_checked_before_anything_is_queued(local: Local) -> None:
    client = local.client
    with pytest.raises(openai.BadRequestError) as unknown:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=local.train_file,
            extra_body={"provider": "local"},
        )
    assert unknown.value.code == "model_not_available"
    assert "tiny" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as wrong_provider:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=local.train_file,
            extra_body={"provider": "openai", "method": {"type": "lora", "lora": {"rank": 4}}},
        )
    assert wrong_provider.value.code == "invalid_method"
    with pytest.raises(openai.BadRequestError) as bad_method:
        client.fine_tuning.jobs.create(
            model="tiny",
            training_file=local.train_file,
            extra_body={
                "method": {"type": "freeze", "freeze": {"trainable_modules": [""]}},
                "provider": "local",
            },
        )
    assert bad_method.value.code == "invalid_method"
    assert client.fine_tuning.jobs.list().data == []


METHODS = {
    "full": {"type": "full"},
    "freeze": {"type": "freeze", "trainable_layers": 1, "train_lm_head": True},
    "lora": {"type": "lora", "rank": 8, "alpha": 16, "dropout": 0.0},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_fine_tunes_through_the_api(local: Local, method: str) -> None:
    client = local.client
    job = _create(local, METHODS[method], suffix=method, validation_file=local.valid_file)
    assert job.model_extra["provider"] == "local"
    done = _wait_done(local, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:{local.team.name}:{method}:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.hyperparameters.n_epochs == EPOCHS and done.hyperparameters.batch_size == BATCH

    # Metrics events: one per step, loss falls by a clear margin, validation loss reported.
    events = _events(local, job.id)
    losses = _train_losses(events)
    total = EPOCHS * N_TRAIN // BATCH
    assert [step for step, _ in losses] == list(range(1, total + 1))
    first, last = losses[0][1], sum(loss for _, loss in losses[-3:]) / 3
    assert last < 0.35 * first, (first, last)
    metrics = [e.data for e in events if e.type == "metrics"]
    assert all(m["learning_rate"] > 0 for m in metrics if "train_loss" in m)
    assert any("valid_loss" in m for m in metrics)

    # Checkpoints, listed through the checkpoints API with callable-looking names.
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    steps = sorted(c.step_number for c in checkpoints)
    assert steps == list(range(CHECKPOINT_EVERY, total + 1, CHECKPOINT_EVERY))
    assert all(
        c.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{c.step_number}"
        for c in checkpoints
    )

    # The fine-tuned model answers through ftq's chat completions (inference worker); the
    # base model does not know these answers.
    hits = [(q, a) for q, a in QA_PAIRS[:N_TRAIN] if _reply(local, done.fine_tuned_model, q) == a]
    assert len(hits) >= N_TRAIN * 3 // 4, hits
    assert all(_base_reply(local, q) != a for q, a in QA_PAIRS[:N_TRAIN])
    question, answer = hits[0]
    stream = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": question}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == answer and len([p for p in pieces if p]) >= 2
    assert done.fine_tuned_model in {m.id for m in client.models.list()}

    final = local.final_dir(job.id)
    assert _sha256(local.base / "model.safetensors") == local.base_sha256  # base untouched
    if method == "freeze":
        _assert_only_top_layer_and_head_changed(local.base, final)
    if method == "lora":
        _assert_only_adapter_saved(final, local.stack.root / "local-models" / job.id)


def _assert_only_top_layer_and_head_changed(base: Path, final: Path) -> None:
    import torch
    from safetensors.torch import load_file

    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert set(before) == set(after)
    trainable = ("model.layers.1.", "lm_head.")
    frozen = [name for name in before if not name.startswith(trainable)]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)  # bit-identical
    changed = [
        n for n in before if n.startswith(trainable) and not torch.equal(before[n], after[n])
    ]
    assert any(n.startswith("lm_head.") for n in changed)
    assert any(n.startswith("model.layers.1.") for n in changed)


def _assert_only_adapter_saved(final: Path, job_dir: Path) -> None:
    from safetensors.torch import load_file

    assert (final / "adapter_config.json").is_file()
    assert not (final / "model.safetensors").exists()
    adapter = load_file(str(final / "adapter_model.safetensors"))
    assert adapter and all("lora_" in name for name in adapter)
    # Checkpoints hold the trained tensors only: the adapter's.
    for weights in (job_dir / "saved-checkpoints").glob("step-*/trainable.safetensors"):
        assert all("lora_" in name for name in load_file(str(weights)))


def test_cancel_stops_within_one_step(local: Local) -> None:
    client = local.client
    # 16 examples, batch 1, 50 epochs: 800 steps, far more than the test waits for.
    running = _create(
        local,
        {"type": "full"},
        suffix="cancel",
        training_file=local.long_file,
        batch_size=1,
        n_epochs=50,
    )
    wait_for(
        lambda: _train_losses(_events(local, running.id)),
        timeout=60,
        what="the first training step",
    )
    # The only training worker is busy: a second job waits in the training queue, and a
    # cancel takes it out at once.
    waiting = _create(local, {"type": "lora"}, suffix="waiting")
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(waiting.id).model_extra["stage"] == "training",
        timeout=30,
        what="the second job to reach the training queue",
    )
    assert client.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"

    client.fine_tuning.jobs.cancel(running.id)
    done = _wait_done(local, running.id, timeout=30)
    assert done.status == "cancelled"
    events = _events(local, running.id)
    requested = next(i for i, e in enumerate(events) if e.message.startswith("Cancellation"))
    after = [e for e in events[requested:] if e.type == "metrics"]
    # The worker reads the flag before every step: at most the step in flight completes.
    assert len(after) <= 1, [e.data for e in after]
    assert _train_losses(events)[-1][0] < 800
    assert not local.final_dir(running.id).exists()
    assert client.fine_tuning.jobs.retrieve(waiting.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.post(f"/fine_tuning/jobs/{done.id}/pause", cast_to=object)


def test_killed_worker_resumes_from_its_last_checkpoint(local: Local) -> None:
    client = local.client
    stack = local.stack
    # 16 examples, batch 2, 20 epochs: 160 steps; a checkpoint every 40.
    job = _create(
        local,
        {"type": "full"},
        suffix="resume",
        training_file=local.long_file,
        batch_size=2,
        n_epochs=20,
    )
    wait_for(
        lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data,
        timeout=60,
        interval=0.05,
        what="the first checkpoint",
    )
    stack.kill(local.trainer)  # SIGKILL, the whole worker: main process and pool child
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    local.trainer = "trainer1"
    _start_trainer(stack, local.trainer)

    done = _wait_done(local, job.id, timeout=120)
    assert done.status == "succeeded", done.error
    events = _events(local, job.id)
    resumed = [e for e in events if (e.data or {}).get("resumed_from_step")]
    assert resumed, [e.message for e in events if e.type == "message"]
    step = resumed[0].data["resumed_from_step"]
    assert step >= CHECKPOINT_EVERY and step % CHECKPOINT_EVERY == 0
    # After the resume, training continued at the next step instead of starting over.
    index = events.index(resumed[0])
    next_step = next(
        e.data["step"] for e in events[index:] if e.type == "metrics" and "train_loss" in e.data
    )
    assert next_step == step + 1
    steps = [s for s, _ in _train_losses(events)]
    assert steps.count(1) == 1 and steps[-1] == 160
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data
    numbers = sorted(c.step_number for c in checkpoints)
    assert numbers == sorted(set(numbers)) and numbers[-1] == 160
    losses = [loss for _, loss in _train_losses(events)]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]


# The local provider at scale (issue 14): several processes, DPO, through the job runner ----


def _job_dir(local: Local, job_id: str) -> Path:
    return local.stack.root / "local-models" / job_id


@pytest.mark.timeout(600)
def test_two_process_job_trains_and_answers(local: Local) -> None:
    job = _create(local, METHODS["lora"], suffix="ddp", resources={"processes": 2})
    done = _wait_done(local, job.id, timeout=420)
    assert done.status == "succeeded", done.error
    info = json.loads((local.final_dir(job.id) / "ftq_model.json").read_text())
    assert info["processes"] == 2
    events = _events(local, job.id)
    total = EPOCHS * N_TRAIN // BATCH
    assert [step for step, _ in _train_losses(events)] == list(range(1, total + 1))
    hits = [(q, a) for q, a in QA_PAIRS[:N_TRAIN] if _reply(local, done.fine_tuned_model, q) == a]
    assert len(hits) >= N_TRAIN * 3 // 4, hits


def test_more_processes_than_the_workers_allow_are_refused(local: Local) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _create(local, METHODS["full"], suffix="toomany", resources={"processes": 3})
    # spec.check_resources' message, not a generic unknown-field refusal.
    assert "exceeds" in refused.value.message and "MAX_PROCESSES" in refused.value.message


def test_dpo_job_makes_the_preferred_answers_the_models_answers(
    local: Local, tmp_path: Path
) -> None:
    pairs = _upload(
        local.client,
        write_chat_dataset(tmp_path / "pairs.jsonl", preference_examples()[:N_TRAIN]),
    )
    job = _create(
        local,
        {"type": "dpo", "sft_weight": 1.0, "lora": {"rank": 8, "alpha": 16}},
        suffix="dpo",
        training_file=pairs,
        beta=0.1,
    )
    done = _wait_done(local, job.id, timeout=180)
    assert done.status == "succeeded", done.error
    assert (local.final_dir(job.id) / "adapter_config.json").is_file()
    losses = [loss for _, loss in _train_losses(_events(local, job.id))]
    assert sum(losses[-3:]) / 3 < 0.35 * losses[0]
    hits = [(q, a) for q, a in QA_PAIRS[:N_TRAIN] if _reply(local, done.fine_tuned_model, q) == a]
    assert len(hits) >= N_TRAIN * 3 // 4, hits


@pytest.mark.timeout(600)
def test_two_process_job_cancels_within_a_step(local: Local) -> None:
    job = _create(
        local,
        {"type": "full"},
        suffix="ddpcancel",
        training_file=local.long_file,
        batch_size=1,
        n_epochs=50,
        resources={"processes": 2},
    )
    wait_for(
        lambda: _train_losses(_events(local, job.id)),
        timeout=240,
        what="the first training step",
    )
    local.client.fine_tuning.jobs.cancel(job.id)
    # Steps the ranks had finished when the cancel was answered, read from rank 0's own
    # step log: the job's metrics events are relayed by the parent and may lag behind the
    # ranks on a busy machine, so their order says nothing about when the ranks stopped.
    steps_log = _job_dir(local, job.id) / "run" / "events.jsonl"
    at_cancel = _logged_steps(steps_log)
    done = _wait_done(local, job.id, timeout=180)
    assert done.status == "cancelled"
    # The step in flight, and at most one that started while the flag was being written.
    trained_after = _logged_steps(steps_log) - at_cancel
    assert trained_after <= 2, trained_after
    relayed = [s for s, _ in _train_losses(_events(local, job.id))]
    assert relayed == list(range(1, len(relayed) + 1)) and len(relayed) >= at_cancel
    assert not local.final_dir(job.id).exists()


def _logged_steps(events_file: Path) -> int:
    *complete, _partial = events_file.read_text(encoding="utf-8").split("\n")
    return sum(1 for line in complete if line.strip() and json.loads(line)["event"] == "step")


@pytest.mark.timeout(600)
def test_two_process_job_survives_a_killed_rank(local: Local) -> None:
    client = local.client
    job = _create(
        local,
        {"type": "full"},
        suffix="ddpkill",
        training_file=local.long_file,
        batch_size=2,
        n_epochs=20,
        resources={"processes": 2},
    )
    wait_for(
        lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data,
        timeout=240,
        interval=0.05,
        what="the first checkpoint",
    )
    pid_file = _job_dir(local, job.id) / "run" / "rank-1.pid"
    os.kill(int(pid_file.read_text()), 9)  # one rank only; the worker lives on

    done = _wait_done(local, job.id, timeout=420)
    assert done.status == "succeeded", done.error
    events = _events(local, job.id)
    resumed = [e for e in events if (e.data or {}).get("resumed_from_step")]
    assert resumed, [e.message for e in events if e.type == "message"]
    steps = [s for s, _ in _train_losses(events)]
    assert steps.count(1) == 1 and steps[-1] == 160


@pytest.mark.timeout(600)
def test_fsdp_job_trains_and_answers(local: Local) -> None:
    """Full fine-tuning sharded over two ranks (FSDP2, gloo): from upload to a model that
    answers, in the same result format as one process."""
    client = local.client
    job = _create(
        local,
        METHODS["full"],
        suffix="fsdp",
        validation_file=local.valid_file,
        resources={"processes": 2, "strategy": "fsdp"},
    )
    done = _wait_done(local, job.id, timeout=420)
    assert done.status == "succeeded", done.error
    info = json.loads((local.final_dir(job.id) / "ftq_model.json").read_text())
    assert (info["processes"], info["strategy"], info["kind"]) == (2, "fsdp", "model")
    assert (local.final_dir(job.id) / "model.safetensors").is_file()
    events = _events(local, job.id)
    assert any("strategy fsdp" in e.message for e in events)
    total = EPOCHS * N_TRAIN // BATCH
    losses = _train_losses(events)
    assert [step for step, _ in losses] == list(range(1, total + 1))
    assert any("valid_loss" in (e.data or {}) for e in events if e.type == "metrics")
    steps = sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data)
    assert steps == list(range(CHECKPOINT_EVERY, total + 1, CHECKPOINT_EVERY))
    hits = [(q, a) for q, a in QA_PAIRS[:N_TRAIN] if _reply(local, done.fine_tuned_model, q) == a]
    assert len(hits) >= N_TRAIN * 3 // 4, hits


def test_unknown_strategies_are_refused_before_anything_is_queued(local: Local) -> None:
    before = {j.id for j in local.client.fine_tuning.jobs.list(limit=100).data}
    for resources, fragment in (
        ({"processes": 2, "strategy": "zero3"}, "must be one of auto, ddp, fsdp"),
        ({"processes": 1, "strategy": "fsdp"}, "needs resources.processes of 2 or more"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            _create(local, METHODS["full"], suffix="badstrategy", resources=resources)
        assert refused.value.code == "invalid_resources"
        assert refused.value.param == "resources.strategy"
        assert fragment in refused.value.message
    assert {j.id for j in local.client.fine_tuning.jobs.list(limit=100).data} == before


# Serving adapters through vLLM (a stand-in with vLLM's HTTP contract) ------------------------
@dataclass
class VllmLocal:
    stack: Stack
    client: OpenAI
    standin: str  # the stand-in's root URL
    models: list[str]


@pytest.fixture(scope="module")
def vllm_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmLocal]:
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = tmp_path_factory.mktemp("vllm")
    base = build_tiny_model(folder / "base")
    port = free_port()
    standin = f"http://127.0.0.1:{port}"
    stack = Stack(
        "vllm",
        extra_env={
            "HF_HUB_OFFLINE": "1",
            "FTQ_LOCAL__ALLOWED_BASE_MODELS": json.dumps({"tiny": str(base)}),
            "FTQ_LOCAL__TORCH_THREADS": "1",
            "FTQ_LOCAL__DEVICE": "cpu",
            "FTQ_LOCAL__CHECKPOINT_EACH_EPOCH": "false",
            "FTQ_LOCAL__INFERENCE_BACKEND": "vllm",
            "FTQ_LOCAL__VLLM_URL": f"{standin}/v1",
            "FTQ_LOCAL__VLLM_MAX_LOADED_ADAPTERS": "2",
            "FTQ_MAX_ACTIVE_JOBS_PER_ACCOUNT": "5",
        },
    )
    try:
        stack.start(workers=1)
        _start_trainer(stack, "trainer0")
        server = stack.group.start(
            "vllm-standin",
            [sys.executable, "-m", "tests.support.vllm_standin", "--port", str(port)],
        )
        wait_http_ok(f"{standin}/v1/models", timeout=60, proc=server)
        team = stack.create_team("vllm")
        client = stack.client(team.keys["member"])
        train_file = _upload(
            client, write_chat_dataset(folder / "t.jsonl", chat_examples()[:N_TRAIN])
        )
        jobs = [
            client.fine_tuning.jobs.create(
                model="tiny",
                training_file=train_file,
                suffix=f"a{i}",
                extra_body={
                    "provider": "local",
                    "method": {
                        "type": "lora",
                        # Different epochs: three adapters with different weights.
                        "lora": {
                            "hyperparameters": {"n_epochs": 1 + i, "batch_size": 4},
                            "rank": 4,
                        },
                    },
                },
            )
            for i in range(3)
        ]
        models = []
        for job in jobs:
            done = wait_for(
                lambda job=job: (
                    (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j
                ),
                timeout=180,
                interval=0.25,
                what=f"job {job.id} to finish",
            )
            assert done.status == "succeeded", done.error
            models.append(done.fine_tuned_model)
        yield VllmLocal(stack=stack, client=client, standin=standin, models=models)
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def _standin_stats(vllm: VllmLocal) -> dict[str, Any]:
    import httpx2

    return dict(httpx2.get(f"{vllm.standin}/standin/stats", timeout=10).json())


def _ask(vllm: VllmLocal, model: str, text: str = "hello") -> str:
    reply = vllm.client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=8, temperature=0
    )
    return reply.choices[0].message.content or ""


def test_adapter_is_loaded_into_vllm_on_first_call(vllm_local: VllmLocal) -> None:
    a = vllm_local.models[0]
    assert _standin_stats(vllm_local)["loads"] == []  # nothing loaded before a call
    first = _ask(vllm_local, a)
    assert first.startswith(f"[{a}@") and first.endswith("hello")
    assert _ask(vllm_local, a) == first  # warm: same adapter, no second load
    assert _standin_stats(vllm_local)["loads"] == [a]
    stream = vllm_local.client.chat.completions.create(
        model=a, messages=[{"role": "user", "content": "hello"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == first


def test_least_recently_used_adapter_is_unloaded_past_the_limit(vllm_local: VllmLocal) -> None:
    a, b, c = vllm_local.models
    replies = {m: _ask(vllm_local, m) for m in (a, b)}
    _ask(vllm_local, a)  # a is now more recent than b
    replies[c] = _ask(vllm_local, c)  # limit 2: b goes
    stats = _standin_stats(vllm_local)
    assert sorted(stats["loaded"]) == sorted([a, c])
    assert stats["unloads"][-1] == b
    # Each adapter answers as itself (its weights' digest differs), and b comes back cold.
    assert len({r.split("]")[0] for r in replies.values()}) == 3
    assert _ask(vllm_local, b) == replies[b]
    stats = _standin_stats(vllm_local)
    assert stats["loads"].count(b) == 2 and sorted(stats["loaded"]) == sorted([b, c])
