"""Prometheus metrics for operators, served by the API at ``/metrics``.

Two sources, so any API replica reports the whole fleet:

- **State, queried at scrape time** from Postgres (the source of truth): jobs by status,
  provider and team; files by validation status (``rate()`` over it gives validation
  throughput); webhook deliveries by outcome; and the broker's queue depth.
- **Upstream calls**, counted by every process that talks to a provider (API for inference,
  workers for uploads, jobs and polls). With Redis as the broker the counts are kept in one
  Redis hash, so they survive restarts of any process and add up across hosts. On the
  embedded default (no Redis) they are per-process counters: ``/metrics`` then shows the
  API process's own calls only.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service import broker
from service.config import Settings, get_settings
from service.db import get_engine
from service.providers.base import ProviderError

log = structlog.get_logger(__name__)

_UPSTREAM_HASH = "ftq:metrics:upstream"
_local_upstream: Counter[str] = Counter()
_local_lock = threading.Lock()


@functools.cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def _uses_redis(settings: Settings) -> bool:
    return settings.resolved_broker_url.startswith(("redis://", "rediss://"))


def count_upstream(provider: str, operation: str, outcome: str) -> None:
    """One upstream call; ``outcome`` is ok, error or rate_limited. Never raises."""
    field = f"{provider}|{operation}|{outcome}"
    settings = get_settings()
    if _uses_redis(settings):
        try:
            _redis(settings.resolved_broker_url).hincrby(_UPSTREAM_HASH, field, 1)
            return
        except Exception as exc:  # metrics must never fail a call
            log.debug("metrics_redis_unavailable", error=type(exc).__name__)
    with _local_lock:
        _local_upstream[field] += 1


def _upstream_counts(settings: Settings) -> dict[str, int]:
    counts: Counter[str] = Counter()
    if _uses_redis(settings):
        try:
            raw = _redis(settings.resolved_broker_url).hgetall(_UPSTREAM_HASH)
            counts.update({k.decode(): int(v) for k, v in raw.items()})
        except Exception as exc:
            log.warning("metrics_redis_unavailable", error=type(exc).__name__)
    with _local_lock:
        counts.update(_local_upstream)
    return dict(counts)


class MeteredCalls:
    """Mixin for providers whose SDK calls all go through ``_call``: counts each call."""

    name: str

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        owner = type(getattr(fn, "__self__", None)).__name__
        operation = f"{owner}.{getattr(fn, '__name__', 'call')}".lower()
        try:
            result = super()._call(fn, *args, **kwargs)  # type: ignore[misc]
        except ProviderError as error:
            outcome = "rate_limited" if error.status_code == 429 else "error"
            count_upstream(self.name, operation, outcome)
            raise
        count_upstream(self.name, operation, "ok")
        return result


def queue_depth(settings: Settings) -> dict[str, int]:
    """Messages waiting in each Celery queue (Redis lists, or the filesystem folder)."""
    queues = (
        broker.DEFAULT_QUEUE,
        broker.SUBMIT_QUEUE,
        broker.SWEEP_QUEUE,
        broker.TRAINING_QUEUE,
        broker.EVALS_QUEUE,
    )
    if _uses_redis(settings):
        client = _redis(settings.resolved_broker_url)
        return {q: int(client.llen(q)) for q in queues}
    folder = Path(settings.broker_folder) / "queue"
    count = sum(1 for _ in folder.glob("*")) if folder.exists() else 0
    return {broker.DEFAULT_QUEUE: count}


class StateCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _rows(self, sql: str) -> list[Any]:
        with get_engine(self.settings).connect() as connection:
            return list(connection.execute(sa.text(sql)))

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily(
            "ftq_jobs",
            "Fine-tuning jobs by status, provider and team.",
            labels=["status", "provider", "team"],
        )
        for status, provider, team, n in self._rows(
            "SELECT status, provider, team_id, count(*) FROM fine_tuning_jobs "
            "GROUP BY status, provider, team_id"
        ):
            jobs.add_metric([status, provider or "", team], n)
        yield jobs

        files = GaugeMetricFamily(
            "ftq_files",
            "Files by validation status (its rate is validation throughput).",
            labels=["validation_status"],
        )
        for status, n in self._rows(
            "SELECT validation_status, count(*) FROM files GROUP BY validation_status"
        ):
            files.add_metric([status], n)
        yield files

        try:
            rows = self._rows("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        except sa.exc.DBAPIError:
            rows = []  # webhooks not migrated in this database
        deliveries = GaugeMetricFamily(
            "ftq_webhook_deliveries", "Webhook deliveries by outcome.", labels=["status"]
        )
        for status, n in rows:
            deliveries.add_metric([status], n)
        yield deliveries

        depth = GaugeMetricFamily(
            "ftq_queue_depth", "Messages waiting in the broker, per queue.", labels=["queue"]
        )
        try:
            for queue, n in queue_depth(self.settings).items():
                depth.add_metric([queue], n)
        except Exception as exc:
            log.warning("metrics_queue_depth_failed", error=type(exc).__name__)
        yield depth

        upstream = CounterMetricFamily(
            "ftq_upstream_requests",
            "Calls to providers by provider, operation and outcome (ok, error, rate_limited).",
            labels=["provider", "operation", "outcome"],
        )
        for field, n in sorted(_upstream_counts(self.settings).items()):
            provider, operation, outcome = field.split("|", 2)
            upstream.add_metric([provider, operation, outcome], n)
        yield upstream


def render(settings: Settings | None = None) -> bytes:
    """The exposition text for one scrape."""
    registry = CollectorRegistry()
    registry.register(StateCollector(settings or get_settings()))
    return generate_latest(registry)
