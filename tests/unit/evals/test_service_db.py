"""The eval service on a fresh SQLite database: migration 0007 upgrades and downgrades;
listed base models (the local allow-list too) resolve to a provider; evals and runs are
checked and stored; another team's eval is a 404."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.config import reset_settings_cache
from service.db import session_scope
from service.errors import InvalidRequest, NotFound

CRITERION = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
CONFIG = {
    "type": "custom",
    "item_schema": {"type": "object", "properties": {"question": {}, "answer": {}}},
    "include_sample_schema": True,
}


# ``db``: tests/unit/conftest.py (a fresh SQLite database migrated to head).


def test_migration_0007_upgrades_and_downgrades(tmp_path: Path) -> None:
    from alembic import command

    from migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0007")
    engine = sa.create_engine(url)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"evals", "eval_runs", "eval_output_items", "eval_gates"} <= tables
    columns = {c["name"] for c in sa.inspect(engine).get_columns("eval_runs")}
    from service.evals.models import EvalRun

    assert columns == set(EvalRun.__table__.columns.keys())  # type: ignore[attr-defined]
    command.downgrade(config, "0006")
    assert not {"evals", "eval_runs"} & set(sa.inspect(engine).get_table_names())
    engine.dispose()


@pytest.fixture
def local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTQ_LOCAL__ALLOWED_BASE_MODELS", '{"tiny-llama": "/nonexistent"}')
    monkeypatch.setenv("FTQ_PROVIDER_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FTQ_PROVIDER_MAX_RETRIES", "0")
    monkeypatch.setenv("FTQ_PROVIDER_TIMEOUT_SECONDS", "0.5")
    reset_settings_cache()


def _team(session: Any, name: str) -> str:
    from service.tenants import service as tenants

    return tenants.create_team(session, name).id


@pytest.mark.usefixtures("local_model", "db")
def test_listed_base_models_resolve_and_others_do_not() -> None:
    from service.jobs import inference

    with session_scope() as session:
        team = _team(session, "a")
        listed = {m["id"]: m for m in inference.list_models(session, team)}
        assert "tiny-llama" in listed and "gpt-4o-mini-2024-07-18" in listed
        assert inference.provider_for_model(session, team, "tiny-llama").name == "local"
        assert inference.provider_for_model(session, team, "gpt-4o-mini-2024-07-18")
        with pytest.raises(NotFound):
            inference.provider_for_model(session, team, "ft:gpt-4o-mini:other::abc")


@pytest.mark.usefixtures("db")
def test_evals_and_runs_are_checked_stored_and_scoped() -> None:
    from sqlmodel import select

    from service.evals import service as evals
    from service.evals.models import EvalRun

    with session_scope() as session:
        a, b = _team(session, "a"), _team(session, "b")
        record = evals.create_eval(
            session, a, {"name": "n", "data_source_config": CONFIG, "testing_criteria": [CRITERION]}
        )
        eval_id = record.id
        shown = evals.eval_object(record)
        assert shown["data_source_config"]["schema"]["required"] == ["item", "sample"]
    content = [{"item": {"question": "q", "answer": "a"}, "sample": {"output_text": "a"}}]
    with session_scope() as session:
        run = evals.create_run(
            session,
            a,
            eval_id,
            {
                "data_source": {
                    "type": "jsonl",
                    "source": {"type": "file_content", "content": content},
                }
            },
        )
        assert (run.total_items, run.status, run.model) == (1, "queued", None)
    with session_scope() as session:
        with pytest.raises(NotFound):
            evals.get_eval(session, b, eval_id)
        with pytest.raises(InvalidRequest) as refused:
            evals.create_run(
                session,
                a,
                eval_id,
                {
                    "data_source": {
                        "type": "jsonl",
                        "source": {
                            "type": "file_content",
                            "content": [{"item": {"question": "q", "answer": "a"}}],
                        },
                    }
                },
            )
        assert refused.value.code == "invalid_item"  # the graders read a sample it lacks
        assert len(session.exec(select(EvalRun)).all()) == 1
