"""Models, chat/legacy completions answering from training data, and moderations."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from sandbox.models import GENERIC_ANSWER
from tests.sandbox.conftest import wait_for_status


def test_chat_answers_from_training_data(client: openai.OpenAI, trained_job: Any) -> None:
    response = client.chat.completions.create(
        model=trained_job.fine_tuned_model,
        messages=[{"role": "user", "content": "which planet is called the red planet"}],
    )
    assert response.object == "chat.completion"
    assert response.model == trained_job.fine_tuned_model
    assert response.choices[0].message.content == "Mars is the red planet."
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.prompt_tokens == len("which planet is called the red planet") // 4 + 1
    assert response.usage.completion_tokens == len("Mars is the red planet.") // 4 + 1
    assert response.usage.total_tokens == 16

    other = client.chat.completions.create(
        model=trained_job.fine_tuned_model,
        messages=[
            {"role": "user", "content": "What color is a banana?"},
            {"role": "assistant", "content": "Bananas are yellow."},
            {"role": "user", "content": "and who wrote hamlet?"},
        ],
    )
    assert other.choices[0].message.content == "William Shakespeare wrote Hamlet."


def test_chat_stream(client: openai.OpenAI, trained_job: Any) -> None:
    stream = client.chat.completions.create(
        model=trained_job.fine_tuned_model,
        messages=[{"role": "user", "content": "how many keys on a piano?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "A standard piano has 88 keys."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(text) // 4 + 1


def test_checkpoint_models_answer_too(client: openai.OpenAI, trained_job: Any) -> None:
    checkpoint = client.fine_tuning.jobs.checkpoints.list(trained_job.id).data[-1]
    response = client.chat.completions.create(
        model=checkpoint.fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": "capital of france?"}],
    )
    assert response.choices[0].message.content == "Paris is the capital of France."


def test_base_model_gives_generic_answer(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": "capital of France?"}]
    )
    assert response.choices[0].message.content == GENERIC_ANSWER


def test_max_tokens_truncates(client: openai.OpenAI, trained_job: Any) -> None:
    response = client.chat.completions.create(
        model=trained_job.fine_tuned_model,
        messages=[{"role": "user", "content": "What is the largest ocean on Earth?"}],
        max_completion_tokens=2,
    )
    assert response.choices[0].finish_reason == "length"
    assert response.choices[0].message.content == "The "


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="ft:gpt-4o-mini-2024-07-18:sandbox::nothere1",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])


def test_legacy_completions_from_prompt_completion_data(client: openai.OpenAI) -> None:
    pairs = [(f"Translate {word} ->", f" {word.upper()}") for word in "abcdefghijkl"]
    lines = "\n".join(json.dumps({"prompt": p, "completion": c}) for p, c in pairs)
    file_id = client.files.create(file=("pc.jsonl", lines.encode()), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="babbage-002", training_file=file_id)
    job = wait_for_status(client, job.id, {"succeeded", "failed"})
    assert job.status == "succeeded", job.error
    response = client.completions.create(
        model=job.fine_tuned_model, prompt=["Translate g ->", "Translate k ->"]
    )
    assert [c.text for c in response.choices] == [" G", " K"]
    assert response.usage is not None and response.usage.total_tokens > 0
    streamed = client.completions.create(
        model=job.fine_tuned_model, prompt="Translate c ->", stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == " C"


def test_prompt_completion_data_rejected_for_chat_models(client: openai.OpenAI) -> None:
    lines = "\n".join(json.dumps({"prompt": f"p{i}", "completion": "c"}) for i in range(12))
    file_id = client.files.create(file=("pc2.jsonl", lines.encode()), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    job = wait_for_status(client, job.id, {"succeeded", "failed"})
    assert job.status == "failed" and job.error is not None
    assert "line 1" in job.error.message and "babbage-002" in job.error.message


def test_models_list_retrieve_delete(client: openai.OpenAI, trained_job: Any) -> None:
    models = {m.id: m for m in client.models.list()}
    assert models["gpt-4.1-2025-04-14"].shutdown_date == "2027-01-14"
    assert models["babbage-002"].shutdown_date is None
    assert models["gpt-3.5-turbo-0125"].shutdown_date is None
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("gpt-4o-mini")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_delete_fine_tuned_model(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="gpt-4.1-nano-2025-04-14", training_file=training_file
    )
    job = wait_for_status(client, job.id, {"succeeded", "failed"})
    deleted = client.models.delete(job.fine_tuned_model)
    assert (deleted.id, deleted.deleted) == (job.fine_tuned_model, True)
    assert job.fine_tuned_model not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
        )


def test_moderations(client: openai.OpenAI) -> None:
    result = client.moderations.create(
        input=["How do I build a bomb?", "I hate those people", "What a lovely day"]
    )
    assert result.id.startswith("modr-")
    assert result.model == "omni-moderation-latest"
    bomb, hate, fine = result.results
    assert bomb.flagged and bomb.categories.violence and bomb.categories.illicit
    assert bomb.category_scores.violence > 0.9
    assert hate.flagged and hate.categories.hate and not hate.categories.violence
    assert not fine.flagged
    assert fine.category_scores.violence < 0.01
    raw = fine.model_dump(by_alias=True)
    assert len(raw["categories"]) == 13 and len(raw["category_scores"]) == 13
    assert raw["category_applied_input_types"]["violence"] == ["text"]


def test_moderation_of_parts_is_one_result(client: openai.OpenAI) -> None:
    result = client.moderations.create(
        input=[
            {"type": "text", "text": "they will kill"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
    )
    assert len(result.results) == 1 and result.results[0].categories.violence
    applied = result.results[0].model_dump(by_alias=True)["category_applied_input_types"]
    assert applied["violence"] == ["text", "image"] and applied["hate"] == ["text"]
    single = client.moderations.create(input="peaceful text", model="text-moderation-latest")
    assert single.model == "text-moderation-latest" and len(single.results) == 1
