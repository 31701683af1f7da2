"""A file's format against the job's model and method (issue 11 item 4)."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest
from service.files.compat import check_fits, fit_findings, misfit


@pytest.mark.parametrize(
    ("file_format", "model", "method", "code"),
    [
        ("chat", "babbage-002", None, "format_model_mismatch"),
        ("chat", "davinci-002", "supervised", "format_model_mismatch"),
        ("chat", "ft:davinci-002:org::abc", None, "format_model_mismatch"),
        ("dpo", "babbage-002", "dpo", "format_model_mismatch"),
        ("chat", "gpt-4o-mini-2024-07-18", "dpo", "format_method_mismatch"),
        ("prompt_completion", "gpt-4o-mini-2024-07-18", "dpo", "format_method_mismatch"),
        ("dpo", "gpt-4o-mini-2024-07-18", None, "format_method_mismatch"),
        ("dpo", "gpt-4o-mini-2024-07-18", "supervised", "format_method_mismatch"),
        ("dpo", "o4-mini-2025-04-16", "reinforcement", "format_method_mismatch"),
        ("dpo", "qwen-local", "lora", "format_method_mismatch"),
    ],
)
def test_misfits(file_format: str, model: str, method: str | None, code: str) -> None:
    problem = misfit(file_format, model, method, local=model.endswith("local"))
    assert problem is not None and problem.code == code
    with pytest.raises(InvalidRequest) as caught:
        check_fits(file_format, model, method, param="validation_file", file_id="file-1")
    assert caught.value.code == code and caught.value.param == "validation_file"
    assert caught.value.message.startswith("File file-1: ")
    [finding] = fit_findings(file_format, model, method)
    assert finding.code == code and finding.severity == "error" and finding.line is None


@pytest.mark.parametrize(
    ("file_format", "model", "method", "local"),
    [
        ("chat", "gpt-4o-mini-2024-07-18", None, False),
        ("chat", "gpt-4o-mini-2024-07-18", "supervised", False),
        ("dpo", "gpt-4o-mini-2024-07-18", "dpo", False),
        ("prompt_completion", "babbage-002", None, False),
        ("chat", "o4-mini-2025-04-16", "reinforcement", False),
        ("prompt_completion", "qwen-local", "full", True),
        ("chat", "babbage-002-lookalike-local", "lora", True),  # local names are not OpenAI's
        ("dpo", "qwen-local", "dpo", True),
        (None, "babbage-002", "dpo", False),  # not validated yet: its report decides
        ("unknown", "babbage-002", None, False),
    ],
)
def test_fits(file_format: str | None, model: str, method: str | None, local: bool) -> None:
    assert misfit(file_format, model, method, local=local) is None
    check_fits(file_format, model, method, local=local)
    findings = fit_findings(file_format, model, method, local=local)
    assert all(f.severity == "warning" for f in findings)


def test_prompt_completion_for_a_chat_model_stays_the_conversion_warning() -> None:
    [finding] = fit_findings("prompt_completion", "gpt-4o-mini-2024-07-18", None)
    assert (finding.code, finding.severity) == ("converted_to_chat", "warning")
    assert fit_findings("prompt_completion", "qwen-local", "lora", local=True) == []
    assert fit_findings("prompt_completion", "babbage-002", None) == []


def test_job_misfit_names_the_file_that_does_not_fit() -> None:
    from service.files.compat import job_misfit
    from service.files.models import File

    def record(file_id: str, file_format: str | None) -> File:
        return File(
            id=file_id,
            team_id="t",
            filename="f.jsonl",
            purpose="fine-tune",
            bytes=1,
            sha256="0",
            storage_key="k",
            format=file_format,
        )

    chat, dpo = record("file-chat", "chat"), record("file-dpo", "dpo")
    assert job_misfit(chat, None, "gpt-4o-mini-2024-07-18", None) is None
    problem = job_misfit(chat, dpo, "gpt-4o-mini-2024-07-18", "supervised")
    assert problem is not None
    assert (problem.param, problem.code) == ("validation_file", "format_method_mismatch")
    assert problem.message.startswith("File file-dpo: ")
    problem = job_misfit(chat, None, "babbage-002", None)
    assert problem is not None and problem.param == "training_file"
    assert job_misfit(record("file-new", None), None, "babbage-002", None) is None
