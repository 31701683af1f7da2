"""Thin registry task: beat sends the model shutdown notices that are due."""

from __future__ import annotations

from service.registry import alerts
from workers.app import app


@app.task(name="registry.shutdown_alerts", expires=600)
def shutdown_alerts() -> dict[str, int]:
    return alerts.send_due_alerts()
