"""Runners: how a job runs, chosen once from its provider (see ``base.Runner``).

``upstream`` serves every provider reached through the ``openai`` SDK (OpenAI, Azure OpenAI,
compatible URLs); ``local`` is ftq's own trainer. Runner modules import the domain, so they
load on first use: the state machine and admission import this package, not the reverse.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from sqlmodel import Session

from service.jobs.runners.base import ProviderRef, Runner

if TYPE_CHECKING:
    from service.jobs.schemas import CreateJobInput

__all__ = ["ProviderRef", "Runner", "all_runners", "choose", "runner_for"]

LOCAL = "local"


@functools.cache
def _local() -> Runner:
    from service.jobs.runners.local import LocalRunner

    return LocalRunner()


@functools.cache
def _upstream() -> Runner:
    from service.jobs.runners.upstream import UpstreamRunner

    return UpstreamRunner()


def runner_for(provider: str) -> Runner:
    """The runner of a job whose ``provider`` column says ``provider``."""
    return _local() if provider == LOCAL else _upstream()


def all_runners() -> list[Runner]:
    return [_upstream(), _local()]


def choose(session: Session, team_id: str, request: CreateJobInput) -> Runner:
    """The runner for a new job: the request's ``provider``, else a local-only ``method``,
    else the team's default."""
    from service.jobs.runners.local import wants_local

    return _local() if wants_local(session, team_id, request) else _upstream()
