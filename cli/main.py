"""The ``ftq`` console command. Subcommand groups live in sibling modules."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ftq: a self-hosted, OpenAI-compatible fine-tuning queue."""


def _register() -> None:
    # Each module adds its commands to ``main``; imported lazily so `ftq --help` stays fast
    # and a module's heavy imports load only when its command runs.
    from cli import admin, demo, dev, files, inference, migrate, sandbox  # noqa: F401
    from cli.team import evals, jobs, login, models, upload  # noqa: F401


_register()
