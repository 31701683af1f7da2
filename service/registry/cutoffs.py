"""Per-provider job cut-offs: a provider that accepts no new fine-tuning jobs (OpenAI from
2027-01-06) is refused at create, naming the alternatives, instead of failing upstream later.

Cut-offs are configured per provider kind (``FTQ_REGISTRY__PROVIDER_CUTOFFS``); the date is
the first day jobs are refused, read on the registry's clock.
"""

from __future__ import annotations

import datetime as dt

from service.config import get_settings
from service.errors import InvalidRequest
from service.registry import clock


def cutoff(kind: str) -> dt.date | None:
    return get_settings().registry.provider_cutoffs.get(kind)


def alternatives(closed: str, at: dt.datetime | None = None) -> list[str]:
    """Where a job can go instead: ftq's own workers when it has base models, and the kinds
    a team can register credentials for that are still open."""
    today = clock.today(at)
    options = []
    if get_settings().local.allowed_base_models:
        options.append("local")
    for kind in ("azure_openai", "openai_compatible", "together"):
        date = cutoff(kind)
        if kind != closed and (date is None or today < date):
            options.append(kind)
    return options


def refuse_if_closed(kind: str, at: dt.datetime | None = None) -> None:
    """400 ``provider_unavailable`` when ``kind`` no longer accepts fine-tuning jobs."""
    date = cutoff(kind)
    if date is None or clock.today(at) < date:
        return
    others = alternatives(kind, at)
    how = (
        "Re-train elsewhere with extra_body={'retrain_of': <job or model id>, 'provider': …, "
        "'model': <new base>} (see GET /v1/migration_plan), or set team provider "
        "credentials for one of: " + ", ".join(others) + "."
        if others
        else "No other provider is configured; ask your ftq operator."
    )
    raise InvalidRequest(
        f"The provider '{kind}' accepts no new fine-tuning jobs since {date.isoformat()}. {how}",
        param="provider",
        code="provider_unavailable",
    )
