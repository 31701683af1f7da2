"""``ftq login``: check a URL and key against the server, then keep them for later commands."""

from __future__ import annotations

import click

from cli.main import main
from cli.team import connection
from cli.team.connection import api_errors, console


@main.command()
@click.option("--url", envvar="OPENAI_BASE_URL", help="ftq's URL (its /v1 base is derived).")
@click.option(
    "--key",
    envvar="OPENAI_API_KEY",
    help="A team API key; prompted for (hidden) when not given.",
)
@api_errors
def login(url: str | None, key: str | None) -> None:
    """Sign in: store URL and key in a 0600 config file after one check against the server."""
    url = url or click.prompt("ftq URL", default="http://127.0.0.1:8000/v1")
    key = key or click.prompt("API key", hide_input=True)
    target = connection.Connection(connection.normalise_url(url), key.strip(), "login")
    models = connection.client(target, max_retries=0).models.list()
    path = connection.save(target.base_url, target.api_key)
    console.print(
        f"signed in to {target.base_url} ({len(models.data)} models visible); "
        f"saved to {path} (mode 0600)"
    )
