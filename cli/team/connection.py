"""Where the team CLI connects, and how its failures read.

The URL and key come from, in order: the command's ``--url``/``--key``, the environment
(``OPENAI_BASE_URL``/``OPENAI_API_KEY``, as the SDK reads them), then the file ``ftq login``
wrote (``$FTQ_CONFIG``, else ``$XDG_CONFIG_HOME/ftq/config.json``), which is mode 0600.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

# soft_wrap: lines piped to a file or CI log stay whole (tables still fit the width).
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False)


def config_path() -> Path:
    explicit = os.environ.get("FTQ_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ftq" / "config.json"


@dataclass(frozen=True)
class Connection:
    base_url: str
    api_key: str
    source: str  # where they came from, for messages


def save(base_url: str, api_key: str) -> Path:
    """Write the login file readable by its owner only (created 0600, never widened)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"base_url": base_url, "api_key": api_key}, indent=2) + "\n"
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    os.chmod(temporary, 0o600)  # an existing file keeps its mode through O_CREAT
    os.replace(temporary, path)
    return path


def _saved() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot read {path}: {error}") from None
    return data if isinstance(data, dict) else {}


def resolve(url: str | None = None, key: str | None = None) -> Connection:
    saved = _saved()
    base_url = url or os.environ.get("OPENAI_BASE_URL") or saved.get("base_url")
    api_key = key or os.environ.get("OPENAI_API_KEY") or saved.get("api_key")
    if not base_url or not api_key:
        raise click.ClickException(
            "not signed in: run `ftq login --url https://ftq.example/v1`, "
            "or set OPENAI_BASE_URL and OPENAI_API_KEY"
        )
    source = (
        "options"
        if url or key
        else "environment"
        if os.environ.get("OPENAI_API_KEY")
        else str(config_path())
    )
    return Connection(normalise_url(base_url), api_key, source)


def normalise_url(url: str) -> str:
    """ftq's SDK base URL ends in /v1; accept the server's root as well."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def client(connection: Connection | None = None, *, max_retries: int = 2) -> Any:
    from openai import OpenAI

    connection = connection or resolve()
    return OpenAI(base_url=connection.base_url, api_key=connection.api_key, max_retries=max_retries)


def as_json(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.dumps(value, indent=2, default=str)


def api_errors(command: F) -> F:
    """Turn SDK errors into one line on stderr and exit 1 (no traceback for a 404)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import openai

        try:
            return command(*args, **kwargs)
        except openai.APIStatusError as error:
            body = error.body if isinstance(error.body, dict) else {}
            message = body.get("message") or str(error)
            code = body.get("code")
            errors.print(f"error ({error.status_code}{', ' + code if code else ''}): {message}")
            sys.exit(1)
        except openai.APIConnectionError as error:
            errors.print(f"error: cannot reach ftq at {error.request.url}: {error}")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


# The options every team command shares, and how they show times.
url_option = click.option("--url", help="ftq's URL (else OPENAI_BASE_URL or `ftq login`).")
key_option = click.option("--key", help="API key (else OPENAI_API_KEY or `ftq login`).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def when(seconds: int | None) -> str:
    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")
