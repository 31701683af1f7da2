"""The wire objects ftq sends (API and webhooks alike) parse as the SDK's own types."""

from __future__ import annotations

import datetime as dt

from openai.types.fine_tuning import FineTuningJob as SdkJob
from openai.types.fine_tuning import FineTuningJobEvent as SdkEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint as SdkCheckpoint

from service.jobs.models import FineTuningJob, JobCheckpoint, JobEvent
from service.jobs.serializers import checkpoint_object, event_object, job_object


def _job(**changes: object) -> FineTuningJob:
    fields: dict[str, object] = {
        "id": "ftjob-abc",
        "team_id": "team_1",
        "model": "gpt-4o-mini-2024-07-18",
        "training_file_id": "file-1",
        "status": "failed",
        "stage": "done",
        "seed": 7,
        "created_at": dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
        "finished_at": dt.datetime(2026, 11, 30, 1, tzinfo=dt.UTC),
        "hyperparameters": {"n_epochs": 3},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        "error": {"code": "data_format", "message": "Bad line 3.", "param": "training_file"},
        "user_metadata": {"team": "search"},
        "sequence": 4,
    }
    fields.update(changes)
    return FineTuningJob(**fields)


def test_a_job_object_parses_as_the_sdks_job_with_ftqs_fields_as_extras() -> None:
    body = job_object(_job(), queue_position=None)
    parsed = SdkJob.model_validate(body)
    assert parsed.status == "failed" and parsed.error and parsed.error.code == "data_format"
    assert parsed.hyperparameters.n_epochs == 3
    assert parsed.hyperparameters.batch_size == "auto"
    assert parsed.result_files == [] and parsed.metadata == {"team": "search"}
    assert parsed.model_extra is not None and parsed.model_extra["stage"] == "done"


def test_events_keep_openai_enums_whatever_the_provider_sent() -> None:
    event = JobEvent(
        id="ftevent-1", job_id="ftjob-abc", created_at=1, message="m", level="warning", type="x"
    )
    body = event_object(event)
    assert (body["level"], body["type"]) == ("warn", "message")
    SdkEvent.model_validate(body)
    metrics = JobEvent(
        id="ftevent-2",
        job_id="ftjob-abc",
        created_at=2,
        message="step 1",
        level="info",
        type="metrics",
        data={"step": 1, "train_loss": 0.5},
    )
    assert SdkEvent.model_validate(event_object(metrics)).type == "metrics"


def test_a_checkpoint_object_parses_as_the_sdks_checkpoint() -> None:
    checkpoint = JobCheckpoint(
        id="ftckpt-1",
        job_id="ftjob-abc",
        created_at=3,
        step_number=10,
        fine_tuned_model_checkpoint="ft:gpt-4o-mini:team::abc:ckpt-step-10",
        metrics={"step": 10, "train_loss": 0.25, "custom_metric": 1.5},
    )
    parsed = SdkCheckpoint.model_validate(checkpoint_object(checkpoint))
    assert parsed.metrics.train_loss == 0.25 and parsed.step_number == 10
