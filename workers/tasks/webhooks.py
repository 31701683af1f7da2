"""Thin webhook tasks: fan-out and the sweeper run on beat; ``webhooks.deliver`` sends one.

No countdowns: a retry waits in ``webhook_deliveries.next_attempt_at`` and the sweeper
claims it when due, so nothing depends on a message surviving in the broker.
"""

from __future__ import annotations

from service.webhooks import delivery
from workers.app import app


@app.task(name="webhooks.fanout", expires=30)
def fanout() -> int:
    return delivery.fanout()


@app.task(name="webhooks.sweep", expires=30)
def sweep() -> int:
    return len(delivery.sweep())


@app.task(name="webhooks.deliver")
def deliver(delivery_id: str, owner: str | None = None) -> str:
    return delivery.deliver(delivery_id, owner)
