"""Jinja2 templates and the small filters they use (times, money, durations)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.responses import Response

CHART_JS = "vendor/chart-4.6.1.umd.min.js"

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _when(value: Any) -> str:
    if value in (None, ""):
        return "—"
    moment = dt.datetime.fromtimestamp(int(value), dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _usd(value: Any) -> str:
    if value is None:
        return "—"
    return f"${float(value):,.2f}" if float(value) >= 0.01 or value == 0 else f"${value:.4f}"


def _json_block(value: Any) -> Markup:
    # Data for page scripts: '<' escaped so no string can close the <script> element.
    text = json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text.replace("&", "\\u0026"))


def _pretty(value: Any) -> str:
    # For people: unescaped unicode and quotes (the template autoescapes the result).
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _days_until(date: Any) -> int | None:
    if not date:
        return None
    try:
        day = dt.date.fromisoformat(str(date)[:10])
    except ValueError:
        return None
    return (day - dt.datetime.now(dt.UTC).date()).days


templates.env.filters["when"] = _when
templates.env.filters["usd"] = _usd
templates.env.filters["json_block"] = _json_block
templates.env.filters["pretty"] = _pretty
templates.env.globals["days_until"] = _days_until
templates.env.globals["chart_js"] = CHART_JS


def render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    viewer = getattr(request.state, "viewer", None)
    return templates.TemplateResponse(
        request, name, {"viewer": viewer, **context}, status_code=status_code
    )
