"""ftq settings: one pydantic-settings object, environment variables prefixed ``FTQ_``.

With nothing set, ftq runs on the embedded default: SQLite and Celery's filesystem
transport under the data folder, and the sandbox as upstream. Outside dev mode the
insecure defaults (built-in secret key, sandbox upstream) are refused at start-up.
Nested groups are set with a double underscore, e.g. ``FTQ_WEBHOOKS__TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.evals.settings import EvalSettings
from service.files.validation.settings import ValidationSettings
from service.providers.local.settings import LocalTrainingSettings
from service.registry.settings import RegistrySettings
from service.webhooks.settings import WebhookSettings

# Only ever valid in dev mode; production refuses to start with it.
DEV_SECRET_KEY = "ftq-dev-insecure-secret-key-change-me"


class InsecureConfiguration(RuntimeError):
    """Raised when a production deployment would run on a development default."""


class LimitSettings(BaseModel):
    """Per-team quotas and the per-key request rate (``FTQ_LIMITS__*``); operators override
    them per team with ``PATCH /v1/tenants/{id}``."""

    # Jobs not yet succeeded/failed/cancelled, queued ones included: an abuse guard well above
    # the concurrency limits, past which jobs wait in the fair queue instead of failing.
    max_active_jobs: int = Field(default=100, ge=0)
    max_stored_bytes: int = Field(default=50 * 1024**3, ge=0)  # sum of the team's live files
    max_files: int = Field(default=1000, ge=0)
    requests_per_minute: int = Field(default=1200, ge=1)  # per API key, all routes together


class LocalSettings(LocalTrainingSettings):
    """The local provider (``FTQ_LOCAL__*``): the trainer's settings plus how ftq runs it."""

    # Where the inference server (`ftq inference`, or vLLM with the same adapters) listens.
    # None: http://127.0.0.1:<inference_port>/v1.
    inference_url: str | None = None
    inference_port: int = 8766
    # Teams (ids or names) whose jobs go to the local provider unless the request names one.
    default_for_teams: list[str] = Field(default_factory=list)
    # A training worker renews its lease every heartbeat; a lease left to lapse means the
    # worker died, and the reconciler hands the job (and its checkpoints) to another worker.
    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    # A queued job whose run message may be lost is re-enqueued after this long.
    requeue_seconds: float = Field(default=300.0, gt=0)
    # OpenAI keeps a checkpoint per epoch; many tiny epochs make that costly, so it can be off.
    checkpoint_each_epoch: bool = True
    # A training task may run for days; Celery's hard limit for it (seconds).
    task_time_limit_seconds: int = Field(default=7 * 24 * 3600, ge=60)

    def resolved_inference_url(self) -> str:
        return self.inference_url or f"http://127.0.0.1:{self.inference_port}/v1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FTQ_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    env: Literal["dev", "production"] = "dev"
    data_dir: Path = Path("var")
    database_url: str | None = None  # default: sqlite under data_dir
    broker_url: str | None = None  # default: Celery filesystem transport under data_dir
    log_format: Literal["json", "console"] | None = None  # default: console in dev, json otherwise
    log_level: str = "INFO"

    # Keys API keys are hashed with (HMAC-SHA256); distinct from the encryption keys.
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # Comma-separated Fernet keys, newest first (MultiFernet: rotate by prepending).
    # Empty in dev: a key is derived from secret_key.
    encryption_keys: SecretStr = SecretStr("")

    # The deployment-wide default upstream. No key in dev -> the sandbox.
    provider_base_url: str | None = None
    provider_api_key: SecretStr | None = None
    provider_organization: str | None = None
    provider_project: str | None = None
    provider_timeout_seconds: float = 60.0
    provider_max_retries: int = 2  # reads only; creates always run with 0
    # Files over the Files API's 512 MB limit go through the Uploads API in parts.
    provider_upload_part_threshold_bytes: int = 512 * 1024 * 1024
    provider_upload_part_bytes: int = 64 * 1024 * 1024  # the Uploads API's part limit

    max_upload_bytes: int = 512 * 1024 * 1024  # OpenAI's per-file limit
    # Every other request body (JSON) is refused with 413 past this, before it is parsed.
    max_request_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)  # evals inline data
    # Chat and legacy completions bodies (long conversations, base64 images).
    max_inference_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # CIDRs a team's provider base_url/endpoint may reach despite the SSRF policy (the
    # same policy as webhooks: loopback, private, link-local, metadata refused by default).
    # Comma-separated or a JSON array, e.g. FTQ_PROVIDER_ALLOWED_NETWORKS=10.20.0.0/16.
    provider_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # When set, GET /metrics requires "Authorization: Bearer <token>".
    metrics_token: SecretStr | None = None

    # A team's monthly spend limit unless its admin sets one (None: unlimited).
    default_monthly_budget_usd: float | None = None

    # Concurrency: jobs over a limit wait in ftq's queue, taken round-robin by team.
    max_active_jobs_per_team: int = 3
    max_active_jobs_per_account: int = 3  # providers cap concurrent fine-tunes (a few per model)
    concurrency_retry_seconds: float = 60.0  # after an upstream "too many jobs" 429
    daily_cap_retry_seconds: float = 3600.0  # after an upstream daily job cap 429

    # Base models a job may name (``ft:`` models of the same team are accepted too).
    fine_tunable_models: list[str] = [
        "gpt-4.1-2025-04-14",
        "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4o-2024-08-06",
        "gpt-4o-mini-2024-07-18",
        "gpt-4o-mini",
        "gpt-4.1-mini",
        "gpt-3.5-turbo-0125",
        "babbage-002",
        "davinci-002",
    ]

    # Sweeper, reconciler and leases.
    sweep_interval_seconds: float = 10.0
    reconcile_interval_seconds: float = 30.0
    lease_seconds: float = 120.0
    submit_stale_seconds: float = 60.0  # a pending submission untouched this long is re-enqueued
    max_submit_attempts: int = 8  # poison-pill guard
    poll_interval_min_seconds: float = 15.0
    poll_interval_max_seconds: float = 600.0
    poll_jitter: float = 0.2
    # With this many quiet jobs of one account due at once, one list call (100 jobs a page)
    # replaces their per-job polls; below it, per-job polls cost about the same.
    list_poll_min_due: int = 5
    # Status checks by poll group (service/jobs/poll_groups.py): each upstream job is tagged
    # with one of ``poll_groups`` groups at create, and one list call per group reads every
    # status in it each ``status_check_seconds``. Changing ``poll_groups`` leaves jobs tagged
    # before on per-job polls until they finish.
    poll_groups: int = 64
    status_check_seconds: float = 30.0
    # Per provider account: requests per second the per-job polls of running jobs (events,
    # checkpoints) may spend; with many running jobs their metrics are read less often.
    metrics_poll_budget_per_second: float = 12.0

    # Celery
    task_time_limit_seconds: int = 300
    broker_visibility_timeout_seconds: int = 3600

    webhooks: WebhookSettings = WebhookSettings()
    validation: ValidationSettings = ValidationSettings()
    limits: LimitSettings = LimitSettings()
    local: LocalSettings = LocalSettings()
    evals: EvalSettings = EvalSettings()
    registry: RegistrySettings = RegistrySettings()

    sandbox_port: int = 8765
    api_port: int = 8000

    @field_validator("provider_allowed_networks", mode="before")
    @classmethod
    def _networks_list(cls, value: Any) -> Any:
        from service.netguard import parse_network_list

        return parse_network_list(value)

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.env == "dev":
            return self
        problems = []
        if self.secret_key.get_secret_value() == DEV_SECRET_KEY:
            problems.append("FTQ_SECRET_KEY is the development default")
        if not self.encryption_keys.get_secret_value():
            problems.append("FTQ_ENCRYPTION_KEYS is empty")
        if not self.provider_api_key:
            problems.append("FTQ_PROVIDER_API_KEY is not set (the sandbox is dev-only)")
        if problems:
            raise InsecureConfiguration(
                "refusing to start outside dev mode: " + "; ".join(problems)
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ftq.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def storage_dir(self) -> Path:
        return (self.data_dir / "files").resolve()

    @property
    def resolved_log_format(self) -> str:
        return self.log_format or ("console" if self.env == "dev" else "json")

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def poll_interval_bounds(self) -> tuple[float, float]:
        return self.poll_interval_min_seconds, self.poll_interval_max_seconds


@functools.cache
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()


__all__ = [
    "DEV_SECRET_KEY",
    "Field",
    "InsecureConfiguration",
    "LimitSettings",
    "LocalSettings",
    "Settings",
    "get_settings",
]
