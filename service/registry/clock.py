"""The registry's clock: "today" for shutdown alerts, retirements and job cut-offs.

Every date decision in the registry reads ``now()`` (or takes an explicit ``now``), shifted by
``FTQ_REGISTRY__CLOCK_OFFSET_DAYS`` so a deployment (or a test) can rehearse a shutdown date.
"""

from __future__ import annotations

import datetime as dt

from service.config import get_settings
from service.db import utcnow


def now() -> dt.datetime:
    return utcnow() + dt.timedelta(days=get_settings().registry.clock_offset_days)


def today(at: dt.datetime | None = None) -> dt.date:
    return (at or now()).date()
