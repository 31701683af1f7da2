"""A job's curves from its metric events: what Chart.js plots on the job page.

Metric events carry ``data`` with ``step`` and any of ``train_loss``, ``valid_loss``,
``full_valid_loss``, ``train_mean_token_accuracy`` and ``learning_rate`` (OpenAI's names, and
the local trainer's); a step reported twice (a resumed job) keeps its latest values.
"""

from __future__ import annotations

from typing import Any

SERIES = ("train_loss", "valid_loss", "full_valid_loss", "learning_rate")


def metric_points(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per metrics event, oldest first: ``{"step", "train_loss", …}``."""
    points: list[dict[str, Any]] = []
    for event in events:
        data = event.get("data") or {}
        if event.get("type") != "metrics" or not isinstance(data.get("step"), int | float):
            continue
        point: dict[str, Any] = {"step": int(data["step"])}
        for name in SERIES:
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                point[name] = float(value)
        if "total_steps" in data and isinstance(data["total_steps"], int):
            point["total_steps"] = data["total_steps"]
        points.append(point)
    return points


def checkpoint_marks(checkpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "step": c["step_number"],
            "id": c["id"],
            "model": c["fine_tuned_model_checkpoint"],
            "train_loss": (c.get("metrics") or {}).get("train_loss"),
            "valid_loss": (c.get("metrics") or {}).get("valid_loss"),
        }
        for c in checkpoints
    ]


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "created_at": event["created_at"],
        "level": event["level"],
        "message": event["message"],
        "type": event["type"],
    }
