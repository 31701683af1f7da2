"""The web dashboard: server-rendered pages over the same routes, scoping and objects as /v1.

Served by the API process under ``/dashboard``; its assets (including the vendored Chart.js)
under ``/dashboard/static``, so it works with no internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install_dashboard(app: FastAPI) -> None:
    from api.dashboard.pages import router

    # The mount first: the router's catch-all 404 page must not shadow the assets.
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.include_router(router)
