"""The catalogue of events ftq sends to webhook endpoints, and their wire format.

Every delivery body is one event, compact JSON::

    {"id": "evt_…", "object": "event", "type": "fine_tuning.job.succeeded",
     "created_at": 1735689600, "sequence": 7, "data": {…}}

``id`` is the event id (the ``webhook-id`` header, stable across retries and replays, is
derived from it by the sender). ``sequence`` increases monotonically per job (or per
object the event is about): delivery is at-least-once and only best-effort ordered, so a
receiver drops an event whose ``sequence`` is not newer than what it already applied, or
fetches the object from the API when order matters. ``data`` is a snapshot of the object.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Final


class EventType(enum.StrEnum):
    """The catalogue: every event type ftq may record. Adding one is adding one line here;
    ``record_event`` refuses any other type when the outbox row is written."""

    FILE_VALIDATED = "file.validated"
    JOB_QUEUED = "fine_tuning.job.queued"
    JOB_RUNNING = "fine_tuning.job.running"
    JOB_PAUSED = "fine_tuning.job.paused"
    JOB_SUCCEEDED = "fine_tuning.job.succeeded"
    JOB_FAILED = "fine_tuning.job.failed"
    JOB_CANCELLED = "fine_tuning.job.cancelled"
    JOB_CHECKPOINT_CREATED = "fine_tuning.job.checkpoint.created"
    JOB_EVALUATED = "fine_tuning.job.evaluated"
    MODEL_SHUTDOWN_APPROACHING = "model.shutdown_approaching"
    MODEL_RETIRED = "model.retired"
    ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    WEBHOOK_TEST = "webhook.test"


EVENT_TYPES: Final[frozenset[str]] = frozenset(EventType)

# Short names kept for the modules that already use them; new code names EventType members.
FILE_VALIDATED: Final = EventType.FILE_VALIDATED
JOB_QUEUED: Final = EventType.JOB_QUEUED
JOB_RUNNING: Final = EventType.JOB_RUNNING
JOB_PAUSED: Final = EventType.JOB_PAUSED
JOB_SUCCEEDED: Final = EventType.JOB_SUCCEEDED
JOB_FAILED: Final = EventType.JOB_FAILED
JOB_CANCELLED: Final = EventType.JOB_CANCELLED
JOB_CHECKPOINT_CREATED: Final = EventType.JOB_CHECKPOINT_CREATED
JOB_EVALUATED: Final = EventType.JOB_EVALUATED
ENDPOINT_DISABLED: Final = EventType.ENDPOINT_DISABLED
WEBHOOK_TEST: Final = EventType.WEBHOOK_TEST


class UnknownEventType(ValueError):
    """A programming error: the type is not in the catalogue. Raised before anything is
    written, so the state change that wanted to announce it rolls back with it."""


def checked_event_type(event_type: str) -> EventType:
    """``event_type`` as a catalogue member, or UnknownEventType."""
    try:
        return EventType(event_type)
    except ValueError:
        raise UnknownEventType(
            f"unknown webhook event type: {event_type!r}; add it to EventType first"
        ) from None


# Public (OpenAI-shaped) job statuses that teams are told about. ``validating_files`` and
# ftq's internal pre-submission states are deliberately absent: they are not news.
_JOB_STATUS_EVENTS: Final[dict[str, str]] = {
    "queued": JOB_QUEUED,
    "running": JOB_RUNNING,
    "paused": JOB_PAUSED,
    "succeeded": JOB_SUCCEEDED,
    "failed": JOB_FAILED,
    "cancelled": JOB_CANCELLED,
}


def event_type_for_job_status(status: str) -> str | None:
    """The event announcing that a job entered ``status``, or None if none is sent."""
    return _JOB_STATUS_EVENTS.get(status)


def build_payload(
    event_id: str, event_type: str, created_at: int, data: dict[str, Any], sequence: int
) -> bytes:
    """The delivery body for one event: compact UTF-8 JSON with a fixed key order.

    Built once when the event is recorded and stored as bytes, so every retry and replay
    sends (and signs) exactly the same body. Raises ValueError for an unknown event type or
    data that is not plain JSON (NaN, infinities, non-serialisable objects).
    """
    checked_event_type(event_type)
    event = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": int(created_at),
        "sequence": int(sequence),
        "data": data,
    }
    try:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise ValueError(f"event data is not JSON-serialisable: {exc}") from exc
    return text.encode("utf-8")
