"""Blocking entry point used by ``ftq sandbox`` and ``python -m sandbox``."""

from __future__ import annotations

import uvicorn

from sandbox.app import create_app
from sandbox.config import SandboxConfig


def run(host: str, port: int, config: SandboxConfig | None = None) -> None:
    """Serve a fresh sandbox on ``host:port`` until interrupted."""
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
