"""structlog for every process: JSON in production, readable in dev.

Context (request_id, team_id, job_id) is bound with ``structlog.contextvars`` and carried
from the request into tasks. A redaction processor keeps secrets out of every log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from service.config import Settings, get_settings

# Key names whose values are never logged, whatever they hold.
_SECRET_KEY_NAMES = re.compile(
    r"(api[_-]?key|secret|token|password|authorization|credential|signature)", re.I
)
# Secret-looking values inside any string: ftq keys, OpenAI keys, webhook secrets, bearer.
_SECRET_VALUES = re.compile(
    r"(ftq_sk_[A-Za-z0-9]+|sk-[A-Za-z0-9_\-]{8,}|whsec_[A-Za-z0-9+/=]+|Bearer\s+\S+)"
)
REDACTED = "[redacted]"


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUES.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if _SECRET_KEY_NAMES.search(str(k)) else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    return {
        key: (REDACTED if _SECRET_KEY_NAMES.search(key) else redact_value(value))
        for key, value in event_dict.items()
    }


def configure_logging(settings: Settings | None = None, *, process: str = "ftq") -> None:
    settings = settings or get_settings()
    level = logging.getLevelName(settings.log_level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if settings.resolved_log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, redact_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging; route them through the same redaction.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[redact_secrets_stdlib, renderer]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    structlog.contextvars.bind_contextvars(process=process)


def redact_secrets_stdlib(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    return redact_secrets(logger, method, event_dict)
