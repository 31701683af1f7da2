"""``ftq sandbox``: the OpenAI-compatible stand-in upstream, on its own."""

from __future__ import annotations

import click

from cli.main import main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
def sandbox(host: str, port: int) -> None:
    """Run the sandbox upstream (timings and faults: SANDBOX_* variables, /sandbox/config)."""
    from sandbox.server import run

    run(host, port)
