"""Every table, imported in one place for Alembic and for metadata creation."""

from service.files.models import File, ProviderFile
from service.jobs.models import FineTuningJob, JobCheckpoint, JobEvent
from service.tenants.models import ApiKey, Team
from service.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointNotice,
)
from service.webhooks.outbox import OutboxEvent

__all__ = [
    "ApiKey",
    "File",
    "FineTuningJob",
    "JobCheckpoint",
    "JobEvent",
    "OutboxEvent",
    "ProviderFile",
    "Team",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEndpointNotice",
]
