"""Every table, imported in one place for Alembic and for metadata creation."""

from service.dashboard.models import DashboardSession
from service.evals.models import Eval, EvalGate, EvalOutputItem, EvalRun
from service.files.models import File, ProviderFile
from service.idempotency import IdempotencyKey
from service.jobs.budgets import TeamBudget
from service.jobs.models import FineTuningJob, JobCheckpoint, JobEvent
from service.providers.credentials import ProviderCredential
from service.registry.models import ModelNotice
from service.tenants.models import ApiKey, ApiKeyAddress, AuditEvent, Team, TeamLimits
from service.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointNotice,
)
from service.webhooks.outbox import OutboxEvent

__all__ = [
    "ApiKey",
    "ApiKeyAddress",
    "AuditEvent",
    "DashboardSession",
    "Eval",
    "EvalGate",
    "EvalOutputItem",
    "EvalRun",
    "File",
    "FineTuningJob",
    "IdempotencyKey",
    "JobCheckpoint",
    "JobEvent",
    "ModelNotice",
    "OutboxEvent",
    "ProviderCredential",
    "ProviderFile",
    "Team",
    "TeamBudget",
    "TeamLimits",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEndpointNotice",
]
