"""Pure pieces of the dashboard and the team CLI: curves from metric events, checkpoint
marks, the loss sparkline and the login file's permissions."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from api.dashboard.charts import checkpoint_marks, metric_points
from cli.team.connection import normalise_url, resolve, save
from cli.team.follow import sparkline


def _metrics(step: int, **values: float) -> dict[str, object]:
    return {"id": f"e{step}", "type": "metrics", "data": {"step": step, **values}}


def test_metric_points_keep_known_series_in_event_order() -> None:
    events = [
        {"id": "m", "type": "message", "data": None},
        _metrics(1, train_loss=2.0, total_steps=3),
        _metrics(2, train_loss=1.5, valid_loss=1.6, learning_rate=1e-4),
        {"id": "bad", "type": "metrics", "data": {"train_loss": 1.0}},  # no step: not a point
        _metrics(3, train_loss=True),  # a bool is not a loss
    ]
    assert metric_points(events) == [
        {"step": 1, "train_loss": 2.0, "total_steps": 3},
        {"step": 2, "train_loss": 1.5, "valid_loss": 1.6, "learning_rate": 1e-4},
        {"step": 3},
    ]


def test_checkpoint_marks_carry_step_model_and_losses() -> None:
    marks = checkpoint_marks(
        [
            {
                "id": "ftckpt-1",
                "step_number": 10,
                "fine_tuned_model_checkpoint": "ft:m:ckpt-step-10",
                "metrics": {"train_loss": 0.5},
            },
            {
                "id": "ftckpt-2",
                "step_number": 20,
                "fine_tuned_model_checkpoint": "x",
                "metrics": None,
            },
        ]
    )
    assert marks[0] == {
        "step": 10,
        "id": "ftckpt-1",
        "model": "ft:m:ckpt-step-10",
        "train_loss": 0.5,
        "valid_loss": None,
    }
    assert marks[1]["train_loss"] is None


def test_sparkline_scales_between_min_and_max_and_keeps_the_tail() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0, 1.0]) == "▁▁"  # flat: no division by zero
    line = sparkline([3.0, 2.0, 1.0, 0.0])
    assert line[0] == "█" and line[-1] == "▁" and len(line) == 4
    assert len(sparkline([float(i) for i in range(100)], width=10)) == 10


def test_login_file_is_owner_only_and_env_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "conf" / "config.json"
    monkeypatch.setenv("FTQ_CONFIG", str(target))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    target.parent.mkdir()
    target.write_text("{}")
    target.chmod(0o644)  # an existing, wider file is narrowed on save
    save("http://ftq.example/v1", "ftq_sk_saved")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text())["api_key"] == "ftq_sk_saved"
    assert resolve().api_key == "ftq_sk_saved"
    monkeypatch.setenv("OPENAI_API_KEY", "ftq_sk_env")
    assert resolve().api_key == "ftq_sk_env"
    assert resolve(key="ftq_sk_flag").api_key == "ftq_sk_flag"
    assert normalise_url("http://ftq.example/") == "http://ftq.example/v1"
    assert normalise_url("http://ftq.example/v1/") == "http://ftq.example/v1"
