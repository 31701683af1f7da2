"""A re-trained model against the model it replaces, on the same eval and the same items.

A re-train copies its parent's evaluation gate (same eval, same criterion) and its data and
seed, so both gates sample the same held-out items. The difference is read from the two
gates' ``fine_tuned`` runs item by item — the parent's was measured while it still answered,
which matters once it is retired — with the gate's own seeded paired bootstrap interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlmodel import Session, select

from service.config import get_settings
from service.evals.gate import bootstrap_ci, interval_object
from service.evals.models import EvalGate, EvalOutputItem
from service.jobs.models import FineTuningJob


def _scores(session: Session, run_id: str, criterion: str) -> dict[int, float]:
    scores: dict[int, float] = {}
    for row in session.exec(select(EvalOutputItem).where(EvalOutputItem.run_id == run_id)):
        result = next((r for r in row.results if r.get("name") == criterion), None)
        ok = row.status != "error" and result is not None
        scores[row.datasource_item_id] = float(result.get("score") or 0.0) if ok else 0.0  # type: ignore[union-attr]
    return scores


def compare_with_parent(
    session: Session, job: FineTuningJob, parent: FineTuningJob
) -> dict[str, Any] | None:
    """The new model's score minus its parent's on the gate criterion, or None until both
    gates have recorded (or when either job has none)."""
    if not job.evaluation or not parent.evaluation:
        return None
    criterion = (job.evaluation_config or {}).get("gate", {}).get("criterion")
    if not criterion or job.evaluation.get("eval_id") != parent.evaluation.get("eval_id"):
        return None
    gates = session.get(EvalGate, job.id), session.get(EvalGate, parent.id)
    if gates[0] is None or gates[1] is None:
        return None
    new_run, old_run = gates[0].runs.get("fine_tuned"), gates[1].runs.get("fine_tuned")
    if not new_run or not old_run:
        return None
    new, old = _scores(session, new_run, criterion), _scores(session, old_run, criterion)
    shared = sorted(set(new) & set(old))
    differences = np.array([new[i] - old[i] for i in shared], dtype=float)
    settings = get_settings().evals
    low, high = bootstrap_ci(differences, settings.bootstrap_samples, settings.bootstrap_seed)
    delta = float(differences.mean()) if shared else 0.0
    return {
        "object": "model.comparison",
        "eval_id": job.evaluation.get("eval_id"),
        "criterion": criterion,
        "model": job.fine_tuned_model,
        "parent_model": parent.fine_tuned_model,
        "items": len(shared),
        "mean_score": round(float(np.mean([new[i] for i in shared])), 6) if shared else None,
        "parent_mean_score": round(float(np.mean([old[i] for i in shared])), 6) if shared else None,
        "delta": round(delta, 6),
        "confidence_interval": interval_object(low, high),
        # What the interval says, not the point estimate: "better" or "worse" only when the
        # 95% interval excludes zero.
        "outcome": "better" if low > 0 else "worse" if high < 0 else "no_significant_difference",
        "runs": {"model": new_run, "parent_model": old_run},
    }
