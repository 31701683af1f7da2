"""ftq files commands."""

from __future__ import annotations

from cli.main import main  # noqa: F401
