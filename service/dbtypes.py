"""Column types shared by the domain models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column
from sqlalchemy.dialects.postgresql import JSONB

JSONType = JSON().with_variant(JSONB(), "postgresql")


def json_column(nullable: bool = True) -> Any:
    return Column(JSONType, nullable=nullable)
