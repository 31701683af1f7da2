"""How a job runs: one small protocol, one implementation per kind of provider.

Chosen once, from the job's ``provider``, by ``service.jobs.runners.runner_for``; no other
module branches on the provider. Runners change a job's status and stage only through the
state machine (``service.jobs.lifecycle``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlmodel import Session

if TYPE_CHECKING:
    from service.files.models import File
    from service.jobs.models import FineTuningJob
    from service.jobs.schemas import CreateJobInput


@dataclass(frozen=True)
class ProviderRef:
    """What job creation records about the provider: its name and account."""

    name: str
    account: str


class Runner(Protocol):
    name: str

    def check_request(self, session: Session, team_id: str, request: CreateJobInput) -> ProviderRef:
        """Refuse at create (InvalidRequest) what this provider would refuse later; return
        the provider and account the job will run on."""
        ...

    def admit(self, session: Session, job: FineTuningJob, *, inline: bool = False) -> None:
        """The job got a capacity slot: move it on and enqueue its work (``inline``: the
        caller, already a submit task, carries on itself)."""
        ...

    def start(self, job_id: str, owner: str) -> None:
        """Work after admission, in the submit task (upload and create upstream)."""
        ...

    def cancel(self, session: Session, job: FineTuningJob) -> FineTuningJob:
        """``cancel_requested`` is set on the locked row: cancel now or pass it on."""
        ...

    def control(self, session: Session, job: FineTuningJob, action: str) -> FineTuningJob:
        """Pause or resume."""
        ...

    def reconcile(self) -> list[str]:
        """Re-enqueue this runner's work whose message or worker was lost."""
        ...

    def estimate_cost(self, training: File, job: FineTuningJob) -> float | None:
        """The budget hold at create; None when nothing is billed or no report exists yet."""
        ...

    def actual_cost(self, job: FineTuningJob) -> float | None: ...
