from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service import dispatch
from service.config import get_settings, reset_settings_cache
from service.db import dispose_engines


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh SQLite database migrated to head (so the migrations run on SQLite too);
    published tasks are dropped. Shared by the unit tests that need a database."""
    for name in ("FTQ_DATABASE_URL", "FTQ_BROKER_URL", "FTQ_ENCRYPTION_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FTQ_DATA_DIR", str(tmp_path))
    reset_settings_cache()
    dispose_engines()
    from migrations import upgrade

    upgrade(get_settings().resolved_database_url)
    previous = dispatch._publisher
    dispatch.install_publisher(lambda _name, _args, _options: None)
    yield
    dispatch.install_publisher(previous)
    dispose_engines()
    reset_settings_cache()
