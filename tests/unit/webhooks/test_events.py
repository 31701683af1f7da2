from __future__ import annotations

import json

import pytest

from service.webhooks import events
from service.webhooks.events import EVENT_TYPES, build_payload, event_type_for_job_status


def test_catalogue():
    assert {
        "file.validated",
        "fine_tuning.job.queued",
        "fine_tuning.job.running",
        "fine_tuning.job.paused",
        "fine_tuning.job.succeeded",
        "fine_tuning.job.failed",
        "fine_tuning.job.cancelled",
        "fine_tuning.job.checkpoint.created",
        "fine_tuning.job.evaluated",
        "model.shutdown_approaching",
        "model.retired",
        "webhook_endpoint.disabled",
        "webhook.test",
    } == EVENT_TYPES


@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        ("queued", events.JOB_QUEUED),
        ("running", events.JOB_RUNNING),
        ("paused", events.JOB_PAUSED),
        ("succeeded", events.JOB_SUCCEEDED),
        ("failed", events.JOB_FAILED),
        ("cancelled", events.JOB_CANCELLED),
        ("validating_files", None),
        ("creating", None),
        ("", None),
    ],
)
def test_event_type_for_job_status(status, event_type):
    assert event_type_for_job_status(status) == event_type


def test_payload_is_compact_ordered_utf8_json():
    body = build_payload(
        "evt_1", events.JOB_SUCCEEDED, 1_700_000_000, {"id": "ftjob-1", "note": "\u00e9"}, 3
    )
    assert (
        body
        == (
            '{"id":"evt_1","object":"event","type":"fine_tuning.job.succeeded",'
            '"created_at":1700000000,"sequence":3,"data":{"id":"ftjob-1","note":"\u00e9"}}'
        ).encode()
    )
    assert list(json.loads(body)) == ["id", "object", "type", "created_at", "sequence", "data"]


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("fine_tuning.job.exploded", {}),
        (events.WEBHOOK_TEST, {"x": float("nan")}),
        (events.WEBHOOK_TEST, {"x": object()}),
    ],
)
def test_payload_refuses_unknown_types_and_non_json_data(event_type, data):
    with pytest.raises(ValueError):
        build_payload("evt_1", event_type, 0, data, 0)
