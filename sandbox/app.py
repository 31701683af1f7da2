"""ftq sandbox: an OpenAI-compatible, stateful stand-in for the fine-tuning upstream.

THIS IS A SANDBOX. Nothing here trains a model: jobs progress on a clock, "fine-tuned" models
answer with the closest example of their training data, and moderation is keyword based.
Every response carries ``x-sandbox: true``. Faults and timings are controlled under
``/sandbox/...``; ``uvicorn sandbox.app:app`` builds the app from ``SANDBOX_*`` variables.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from sandbox.azure import AzureMiddleware
from sandbox.config import SandboxConfig
from sandbox.errors import install_error_handlers
from sandbox.faults import SandboxMiddleware, quiet_dropped_connection_logs
from sandbox.routes import control, files, inference, jobs
from sandbox.runtime import Runtime
from sandbox.together import router as together_router


def create_app(
    config: SandboxConfig | None = None, *, clock: Callable[[], float] | None = None
) -> FastAPI:
    """A fresh sandbox with its own state; ``config`` defaults to the environment's."""
    config = config if config is not None else SandboxConfig.from_env()
    app = FastAPI(
        title="ftq sandbox (fake OpenAI upstream)",
        description=__doc__,
        version="1",
    )
    app.state.runtime = Runtime(config, clock)
    install_error_handlers(app)
    for module in (files, jobs, inference):
        app.include_router(module.router, prefix="/v1")
    app.include_router(control.router)
    app.include_router(together_router)  # Together AI's shapes under /together/v1

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "sandbox": True}

    app.add_middleware(
        SandboxMiddleware,
        runtime=app.state.runtime,
        route_templates=lambda: app.openapi()["paths"].keys(),
    )
    # Added last = outermost: Azure paths are checked and rewritten before the /v1 handling.
    app.add_middleware(AzureMiddleware)
    quiet_dropped_connection_logs()
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn sandbox.app:app`` reads this attribute; building it lazily keeps a plain
    # ``from sandbox.app import create_app`` free of side effects.
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = create_app()
    return _app
