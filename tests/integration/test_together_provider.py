"""The Together adapter against the sandbox's Together mode (a real process, Together's
published shapes under /together/v1): files, a job from create to completion, events,
checkpoints, the fine-tuned model answering through the OpenAI-compatible chat endpoint,
cancel, exactly-once recovery by the ftq job id in the suffix, and errors by kind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from service.providers.base import CreateJobRequest, ErrorKind, FineTuningProvider, ProviderError
from service.providers.together_provider import TogetherCredentials, TogetherProvider
from tests.integration.conftest import CHAT_EXAMPLES
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_keys_and_audit import call

BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
TERMINAL = ("succeeded", "failed", "cancelled")


def job_upstream_id(stack: Stack, job_id: str) -> str:
    def query(session: Any) -> str:
        from service.jobs.models import FineTuningJob

        return str(session.get(FineTuningJob, job_id).upstream_job_id)

    return stack.db(query)


def _provider(stack: Stack) -> TogetherProvider:
    credentials = TogetherCredentials(api_key="tg-key", base_url=f"{stack.sandbox_url}/together/v1")
    return TogetherProvider(credentials, timeout=10, max_retries=0)


def _request(job_id: str, training: str, **changes: object) -> CreateJobRequest:
    fields: dict = {
        "ftq_job_id": job_id,
        "model": BASE,
        "training_file": training,
        "validation_file": None,
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 2.0}},
        },
        "hyperparameters": None,
        "suffix": "support",
        "seed": 7,
        "metadata": {},
        **changes,
    }
    return CreateJobRequest(**fields)


def test_together_adapter_runs_a_job_end_to_end(stack: Stack, dataset: Path) -> None:
    provider: FineTuningProvider = _provider(stack)  # the protocol the runner drives
    assert provider.account.startswith("tg_")
    training = provider.upload_file(dataset, "ftq-abc123-train.jsonl")
    assert provider.file_exists(training)
    assert provider.find_uploaded_file("ftq-abc123") == training
    assert provider.download_file(training) == dataset.read_bytes()
    assert not provider.file_exists("file-missing")

    ftq_id = f"ftjob-{int(time.time() * 1000)}"
    created = provider.create_job(_request(ftq_id, training), timeout=10)
    assert created.status == "queued" and created.model == BASE
    assert created.hyperparameters == {
        "n_epochs": 2,
        "batch_size": "max",
        "learning_rate_multiplier": 2.0,
    }
    # After a lost create answer, the job is found again by the id carried in its suffix.
    found = provider.find_job(ftq_id)
    assert found is not None and found.id == created.id
    assert provider.find_job("ftjob-neverseen") is None

    done = wait_for(
        lambda: (j := provider.get_job(created.id)).status == "succeeded" and j,
        timeout=20,
        what="the Together job",
    )
    assert done.fine_tuned_model and "support" in done.fine_tuned_model
    assert done.trained_tokens and done.finished_at
    events = provider.list_new_events(created.id, None)
    assert events[0].message == "Fine tune request created"
    assert provider.list_new_events(created.id, events[1].id) == events[2:]
    assert provider.list_new_events(created.id, events[-1].id) == []
    (checkpoint,) = provider.list_checkpoints(created.id)
    assert checkpoint.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:1"
    page, more = provider.list_jobs(after=None, limit=100)
    assert created.id in [j.id for j in page] and more is False
    assert done.fine_tuned_model in [m["id"] for m in provider.list_models()]

    question, answer = CHAT_EXAMPLES[0]
    messages = [{"role": "user", "content": question}]
    reply = provider.chat_completion({"model": done.fine_tuned_model, "messages": messages})
    assert reply["choices"][0]["message"]["content"] == answer
    chunks = list(
        provider.chat_completion_stream({"model": done.fine_tuned_model, "messages": messages})
    )
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer


def test_together_cancel_and_errors(stack: Stack, dataset: Path) -> None:
    provider = _provider(stack)
    training = provider.upload_file(dataset, "train.jsonl")
    job = provider.create_job(
        _request(
            "ftjob-cancelme",
            training,
            method={"type": "lora", "lora": {"rank": 16, "alpha": 32}},
        ),
        timeout=10,
    )
    assert provider.cancel_job(job.id).status == "cancelled"
    assert provider.get_job(job.id).status == "cancelled"
    with pytest.raises(ProviderError) as caught:
        provider.get_job("ft-missing")
    assert caught.value.kind == ErrorKind.not_found
    with pytest.raises(ProviderError) as caught:
        provider.create_job(_request("ftjob-x", "file-missing"), timeout=10)
    assert caught.value.kind == ErrorKind.permanent and caught.value.status_code == 400
    with pytest.raises(ProviderError) as caught:
        provider.pause_job(job.id)
    assert caught.value.code == "unsupported"
    with pytest.raises(ProviderError) as caught:
        provider.create_job(
            _request("ftjob-y", training, method={"type": "reinforcement"}), timeout=10
        )
    assert caught.value.param == "method"
    with pytest.raises(ProviderError) as caught:
        TogetherProvider(
            TogetherCredentials(api_key="k", base_url="http://127.0.0.1:9/v1"),
            timeout=2,
            max_retries=0,
        ).get_job("ft-1")
    assert caught.value.kind == ErrorKind.transient


def test_a_team_on_together_trains_and_calls_its_model_through_ftq(
    stack: Stack, team: Team, dataset: Path
) -> None:
    """Selected by team credentials (kind "together"): a sandbox (OpenAI-shaped) fine-tune
    is re-trained on Together in one call, followed to the end by ftq's usual machinery, and
    its model answers through ftq's chat endpoint; the registry records where it went."""
    key = team.keys["member"]
    client = stack.client(key)
    with dataset.open("rb") as handle:
        training = client.files.create(file=handle, purpose="fine-tune").id
    parent = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=training)
    parent = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(parent.id)).status in TERMINAL and j,
        timeout=90,
        what="the sandbox parent",
    )
    assert parent.status == "succeeded"

    status, body, _ = call(
        stack,
        "PUT",
        "/v1/provider_credentials",
        team.keys["admin"],
        {
            "provider": "together",
            "api_key": "tg-team-key-0123456789",
            "base_url": f"{stack.sandbox_url}/together/v1",
        },
    )
    assert status == 200, body
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=training)
    assert caught.value.code == "model_not_available"  # Together's catalogue, not OpenAI's

    job = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=training,
        extra_body={"retrain_of": parent.fine_tuned_model},
    )
    assert (job.model_extra or {})["provider"] == "together"
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j,
        timeout=90,
        what="the Together job",
    )
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and done.fine_tuned_model.startswith("sandbox-user/")
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Job finished" in messages
    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoint.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:1"

    question, answer = CHAT_EXAMPLES[0]
    reply = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": question}]
    )
    assert reply.choices[0].message.content == answer
    entry: Any = client.get(f"/models/{done.fine_tuned_model}", cast_to=object)
    assert entry["provider"] == "together" and entry["parent"]["fine_tuning_job_id"] == parent.id
    assert entry["lineage"]["method"]["type"] == "supervised"
    # Trained at Together's (sandbox) API: its job id and output naming, not OpenAI's.
    assert job_upstream_id(stack, job.id).startswith("ft-")
    assert call(stack, "DELETE", "/v1/provider_credentials", team.keys["admin"])[0] == 200
