"""Record of every /v1 request, for tests that assert what reached the "upstream"."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

_MAX_RECORDS = 10_000  # keeps a long-running demo from growing without bound
_SUMMARY_CHARS = 300


@dataclass
class RequestRecord:
    id: int
    time: float
    method: str
    path: str
    route: str  # the route template, e.g. /v1/fine_tuning/jobs/{fine_tuning_job_id}
    query: str
    body_summary: str
    ftq_job_id: str | None
    status_code: int | None = None  # None while in flight or when the connection was dropped
    outcome: str = "in_flight"  # ok | error | fault_429 | fault_500 | dropped | aborted
    fault: str | None = None
    duration_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_body(body: bytes, content_type: str) -> str:
    if not body:
        return ""
    if content_type.startswith("multipart/"):
        return f"<multipart body, {len(body)} bytes>"
    text = body.decode("utf-8", errors="replace")
    if len(text) > _SUMMARY_CHARS:
        return text[:_SUMMARY_CHARS] + f"... ({len(body)} bytes)"
    return text


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._next_id = 1
        # Counts since start (or clear) that survive the record cap, for benchmarks.
        self._totals: Counter[str] = Counter()

    def start(self, **fields: Any) -> RequestRecord:
        with self._lock:
            record = RequestRecord(id=self._next_id, **fields)
            self._next_id += 1
            self._records.append(record)
            self._totals[f"{record.method} {record.route}"] += 1
            del self._records[:-_MAX_RECORDS]
            return record

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._totals.clear()

    def query(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """Records oldest first; ``path`` matches the path or the route template exactly."""
        with self._lock:
            return [
                r.to_dict()
                for r in self._records
                if (not method or r.method == method.upper())
                and (not path or path in (r.path, r.route))
            ]

    def totals(self) -> dict[str, int]:
        """Requests per method and route since start or the last clear, never capped."""
        with self._lock:
            return dict(self._totals)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(f"{r.method} {r.route}" for r in self._records))
