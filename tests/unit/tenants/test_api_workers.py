"""``ftq api --workers``: several uvicorn processes only where the rate limits are shared."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli.main import main
from service.config import reset_settings_cache


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda _path, argv: calls.append(list(argv)))
    return calls


def test_workers_are_passed_to_uvicorn_with_redis(
    monkeypatch: pytest.MonkeyPatch, execs: list[list[str]]
) -> None:
    monkeypatch.setenv("FTQ_BROKER_URL", "redis://127.0.0.1:6379/0")
    reset_settings_cache()
    try:
        result = CliRunner().invoke(main, ["api", "--port", "8123", "--workers", "3"])
    finally:
        reset_settings_cache()
    assert result.exit_code == 0, result.output
    [argv] = execs
    assert "uvicorn" in argv and argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--port") + 1] == "8123"


def test_one_process_by_default_and_several_refused_without_redis(
    monkeypatch: pytest.MonkeyPatch, execs: list[list[str]], tmp_path: object
) -> None:
    monkeypatch.delenv("FTQ_BROKER_URL", raising=False)
    monkeypatch.setenv("FTQ_DATA_DIR", str(tmp_path))
    reset_settings_cache()
    try:
        assert CliRunner().invoke(main, ["api"]).exit_code == 0
        refused = CliRunner().invoke(main, ["api", "--workers", "2"])
    finally:
        reset_settings_cache()
    assert "--workers" not in execs[0] and len(execs) == 1
    assert refused.exit_code == 2 and "needs FTQ_BROKER_URL=redis://" in refused.output
