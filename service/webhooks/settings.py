"""Outbound webhook settings, embedded in ftq's settings as ``Settings.webhooks``.

Set from the environment with the nested delimiter, e.g. ``FTQ_WEBHOOKS__TIMEOUT_SECONDS=10``.
List fields also accept a comma-separated string (``FTQ_WEBHOOKS__ALLOWED_NETWORKS=
127.0.0.0/8,::1/128``) as well as a JSON array.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode


def _split_list(value: Any) -> Any:
    """Turn ``"a, b"`` or ``'["a","b"]'`` into a list; leave anything else to pydantic."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [item.strip() for item in text.split(",") if item.strip()]


class WebhookSettings(BaseModel):
    # Svix's schedule: an immediate attempt, then these waits (8 attempts over ~27.5 h).
    retry_schedule_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    # Each wait is scaled by a uniform factor in [1 - jitter, 1 + jitter] (Svix: ±20%).
    jitter: float = Field(default=0.2, ge=0, lt=1)
    # One budget for the whole attempt: connect, send and read (Svix: 2xx within 15 s).
    timeout_seconds: float = Field(default=15.0, gt=0)
    # How much of a receiver's response body is read and kept (Polar keeps 2048 chars).
    max_response_body_bytes: int = Field(default=2048, ge=0)

    # CIDRs that are opted back in despite the SSRF policy (development and tests only).
    allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https", "http"]
    )
    allowed_ports: Annotated[list[int] | None, NoDecode] = None  # None: any port

    # An endpoint that has failed continuously this long is disabled (Svix: 5 days).
    disable_after_seconds: float = Field(default=5 * 86400.0, gt=0)
    # How long the previous secret keeps signing alongside a rotated one.
    secret_overlap_seconds: float = Field(default=86400.0, ge=0)

    # Retry-After is honoured only within [max(scheduled wait, min), base wait x factor]
    # so a receiver can slow us down a little but never stall or hot-loop the queue.
    retry_after_min_seconds: float = Field(default=0.0, ge=0)
    retry_after_max_factor: float = Field(default=2.0, ge=1)
    # Minimum wait after a 429 or a timeout (Svix's OVERLOAD_PENALTY_SECS).
    overload_penalty_seconds: float = Field(default=60.0, ge=0)

    # Delivery pumps (service/webhooks/pump.py). At most ``pumps`` run at once across all
    # workers (each holds one worker slot while it runs), so a burst of deliveries never
    # takes every slot from the job tasks that share the queue.
    pumps: int = Field(default=2, ge=1)
    # Sends one pump keeps in flight over its threads.
    pump_threads: int = Field(default=16, ge=1)
    # Deliveries leased by one claim statement.
    claim_batch: int = Field(default=50, ge=1)
    # A pump hands over (a fresh wake-up at the back of the queue) after this long, so a
    # standing backlog shares the worker slots with the tasks queued behind it.
    pump_seconds: float = Field(default=20.0, gt=0)
    # Sends one pump keeps in flight to a single endpoint: a slow or dead endpoint ties up
    # at most this many threads while the others' deliveries go on.
    max_in_flight_per_endpoint: int = Field(default=4, ge=1)

    @field_validator(
        "allowed_networks",
        "allowed_schemes",
        "allowed_ports",
        "retry_schedule_seconds",
        mode="before",
    )
    @classmethod
    def _accept_comma_separated(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            # An empty env var means "unset": fall back to the field's default.
            field = cls.model_fields[info.field_name or ""]
            return field.get_default(call_default_factory=True)
        return _split_list(value)

    @field_validator("allowed_ports")
    @classmethod
    def _valid_ports(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not 0 < port < 65536 for port in value):
            raise ValueError("ports must be between 1 and 65535")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        # strict=False: "10.0.0.1/8" means the network 10/8; normalise to the network form.
        return [str(ipaddress.ip_network(cidr, strict=False)) for cidr in value]

    @field_validator("allowed_schemes")
    @classmethod
    def _lowercase_schemes(cls, value: list[str]) -> list[str]:
        return [scheme.lower() for scheme in value]

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _non_negative_waits(cls, value: list[float]) -> list[float]:
        if any(wait < 0 for wait in value):
            raise ValueError("retry waits must be >= 0")
        return value
