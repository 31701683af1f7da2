"""When a fine-tune stops working: its base model's shutdown date, and the provider's kind.

The rule: a fine-tune shuts down with its base model. The date comes from the provider's own
model list when it reports one (OpenAI's ``Model.shutdown_date``), else from
``FTQ_REGISTRY__SHUTDOWN_DATES`` for the provider's kind (longest name prefix). Models on
ftq's own workers never shut down: their weights are the team's.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from sqlmodel import Session

from service.config import get_settings
from service.jobs.inference import provider_models
from service.jobs.models import FineTuningJob
from service.providers.base import Provider
from service.providers.registry import (
    LOCAL_ACCOUNT,
    fine_tuning_provider_for_account,
    provider_for_account,
)

OPENAI = "openai"
OPENAI_COMPATIBLE = "openai_compatible"
LOCAL = "local"

# An account is a fingerprint of fixed credentials, so its kind never changes.
_kind_of_account: dict[str, str] = {}


def base_of(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:team:suffix:id`` -> ``gpt-4o-mini-2024-07-18``."""
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else model


def kind_of_provider(provider: Provider | object) -> str:
    """``openai`` only for OpenAI's own API; any other base URL is ``openai_compatible``."""
    name = str(getattr(provider, "name", OPENAI))
    if name != OPENAI:
        return name
    base_url = getattr(getattr(provider, "credentials", None), "base_url", None) or ""
    host = urlsplit(base_url).hostname or ""
    return OPENAI if host == "api.openai.com" or host.endswith(".openai.com") else OPENAI_COMPATIBLE


def kind_of_job(session: Session, job: FineTuningJob) -> str:
    if job.provider != OPENAI or job.account == LOCAL_ACCOUNT:
        return job.provider
    known = _kind_of_account.get(job.account)
    if known is None:
        try:
            provider = fine_tuning_provider_for_account(job.account, session=session)
        except LookupError:
            return OPENAI_COMPATIBLE  # credentials gone: nothing more can be said
        known = _kind_of_account[job.account] = kind_of_provider(provider)
    return known


def configured_shutdown(kind: str, model: str) -> dt.date | None:
    table = get_settings().registry.shutdown_dates.get(kind) or {}
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else None


def _reported(session: Session, job: FineTuningJob, base: str) -> dt.date | None:
    try:
        catalogue = provider_models(provider_for_account(job.account, session=session))  # type: ignore[arg-type]
    except LookupError:
        return None
    for name in (job.fine_tuned_model, base):
        value = (catalogue.get(name or "") or {}).get("shutdown_date")
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                continue
    return None


def shutdown_date(
    session: Session, job: FineTuningJob, *, ask_provider: bool = True
) -> dt.date | None:
    """The day ``job``'s fine-tune stops answering, or None when nothing says it will.
    ``ask_provider=False`` reads configuration only: for the inference path, which must not
    wait on the provider's model list (the beat task asks it and records retirements)."""
    if job.provider == LOCAL or job.account == LOCAL_ACCOUNT:
        return None
    base = base_of(job.model)
    reported = _reported(session, job, base) if ask_provider else None
    return reported or configured_shutdown(kind_of_job(session, job), base)
