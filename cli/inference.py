"""``ftq inference``: the OpenAI-compatible server for locally fine-tuned models."""

from __future__ import annotations

import os
import sys

import click

from cli.main import main


def inference_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "workers.inference_server:app",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Keep it private.")
@click.option("--port", type=int, default=None, help="Default: FTQ_LOCAL__INFERENCE_PORT.")
def inference(host: str, port: int | None) -> None:
    """Serve local fine-tuned models (chat completions) for the `local` provider."""
    from service.config import get_settings

    port = port or get_settings().local.inference_port
    os.execv(sys.executable, inference_command(host, port))
