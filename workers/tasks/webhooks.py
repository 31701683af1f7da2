"""Thin webhook tasks: fan-out and the sweeper run on beat; ``webhooks.deliver_due`` runs
one delivery pump (claims due deliveries in batches, sends them, records the attempts).

No countdowns and no ids in the wake-ups: a retry waits in
``webhook_deliveries.next_attempt_at`` and the sweeper wakes a pump when it is due, so
nothing depends on a message surviving in the broker.
"""

from __future__ import annotations

from service.webhooks import delivery, pump
from workers.app import app


@app.task(name="webhooks.fanout", expires=30)
def fanout() -> int:
    return delivery.fanout()


@app.task(name="webhooks.sweep", expires=30)
def sweep() -> int:
    return delivery.sweep()


@app.task(name="webhooks.deliver_due")
def deliver_due() -> int:
    return len(pump.run())


@app.task(name="webhooks.deliver")
def deliver(_delivery_id: str | None = None, _owner: str | None = None) -> int:
    # The one-delivery message of earlier versions, still in a broker during an upgrade:
    # the delivery it names is due (or leased and soon due again), so a pump takes it.
    return len(pump.run())
