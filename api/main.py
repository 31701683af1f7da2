"""The FastAPI app: OpenAI-shaped routes over ftq's services."""

from __future__ import annotations

from fastapi import FastAPI

import service.models  # noqa: F401  (every table registered before the first query)
from api.body_limit import RequestGuardMiddleware
from api.dashboard import install_dashboard
from api.errors import install_error_handlers
from api.idempotency import IdempotencyMiddleware
from api.middleware import RequestContextMiddleware
from api.openapi import install_openapi
from api.routers import (
    api_keys,
    audit,
    credentials,
    evals,
    files,
    graders,
    health,
    jobs,
    migration,
    models,
    tenants,
    usage,
    webhooks,
)
from service.broker import publish
from service.config import get_settings
from service.dispatch import install_publisher
from service.logging import configure_logging


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings, process="api")
    install_publisher(publish)

    app = FastAPI(
        title="ftq",
        description="Fine-tuning queue: an OpenAI-compatible, multi-tenant fine-tuning service.",
        version="0.1.0",
    )
    install_error_handlers(app)
    install_openapi(app)
    # Added last = outermost: the request id is bound before idempotency replays answer,
    # and bodies are bounded before idempotency reads them.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(RequestGuardMiddleware)
    app.add_middleware(RequestContextMiddleware)
    for router in (health.router, files.router, jobs.router, models.router, webhooks.router):
        app.include_router(router)
    for router in (api_keys.router, credentials.router, audit.router, tenants.router):
        app.include_router(router)
    app.include_router(usage.router)
    app.include_router(evals.router)
    app.include_router(evals.jobs_router)
    app.include_router(graders.router)
    app.include_router(migration.router)
    install_dashboard(app)
    return app


app = create_app()
