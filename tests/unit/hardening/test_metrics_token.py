"""/metrics: closed in production unless FTQ_METRICS_TOKEN is set (then bearer only);
open on the embedded default (dev) as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import install_error_handlers
from api.routers import health
from service.config import reset_settings_cache
from service.db import dispose_engines


@pytest.fixture
def scrape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name in ("FTQ_DATABASE_URL", "FTQ_BROKER_URL", "FTQ_METRICS_TOKEN", "FTQ_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FTQ_DATA_DIR", str(tmp_path))
    reset_settings_cache()
    dispose_engines()
    # The tables straight from the models: this test is about the route, not migrations.
    from sqlmodel import SQLModel

    import service.models  # noqa: F401
    from service.db import get_engine

    SQLModel.metadata.create_all(get_engine())
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(health.router)
    yield TestClient(app)
    dispose_engines()
    reset_settings_cache()


def production(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    monkeypatch.setenv("FTQ_ENV", "production")
    monkeypatch.setenv("FTQ_SECRET_KEY", "s" * 48)
    monkeypatch.setenv("FTQ_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("FTQ_PROVIDER_API_KEY", "sk-operator")
    if token is not None:
        monkeypatch.setenv("FTQ_METRICS_TOKEN", token)
    reset_settings_cache()


def test_dev_default_is_open(scrape: TestClient) -> None:
    response = scrape.get("/metrics")
    assert response.status_code == 200 and "ftq_jobs" in response.text


def test_production_without_a_token_never_serves_team_ids(
    scrape: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    production(monkeypatch, None)
    response = scrape.get("/metrics", headers={"authorization": "Bearer anything"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "metrics_token_required" and "FTQ_METRICS_TOKEN" in error["message"]


def test_production_with_a_token_wants_it_as_bearer(
    scrape: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    production(monkeypatch, "scrape-secret-1234")
    assert scrape.get("/metrics").status_code == 401
    assert scrape.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
    ok = scrape.get("/metrics", headers={"authorization": "Bearer scrape-secret-1234"})
    assert ok.status_code == 200 and "ftq_jobs" in ok.text
