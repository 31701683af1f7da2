"""``ftq admin``: teams and API keys, straight against the database.

Operators run these on a host with the deployment's settings (database URL, secret key);
lists read every page, so a script sees all teams or keys, never the first twenty.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import click

from cli.main import main


@main.group()
def admin() -> None:
    """Manage teams and API keys (operator commands)."""


@admin.command("create-team")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the team as JSON.")
def create_team(name: str, as_json: bool) -> None:
    """Create a team named NAME and print its id."""
    from service.db import session_scope
    from service.errors import FtqError
    from service.tenants import service as tenants

    try:
        with session_scope() as session:
            team = tenants.create_team(session, name)
            team_id = team.id
    except FtqError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(json.dumps({"id": team_id, "name": name}) if as_json else team_id)


@admin.command("create-key")
@click.option("--team", "team", default=None, help="Team id or name.")
@click.option(
    "--operator",
    is_flag=True,
    help="A platform-operator key (manages teams via /v1/tenants; needs no --team).",
)
@click.option(
    "--role", type=click.Choice(["admin", "member", "viewer"]), default="member", show_default=True
)
@click.option("--name", default="", help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON.")
def create_key(team: str | None, operator: bool, role: str, name: str, as_json: bool) -> None:
    """Create an API key; it is printed once and never stored."""
    from service.db import session_scope
    from service.errors import FtqError
    from service.tenants import service as tenants

    if operator == (team is not None):
        raise click.UsageError("Give either --team or --operator.")
    try:
        with session_scope() as session:
            if operator:
                api_key, token = tenants.create_operator_key(session, name)
                role = api_key.role
            else:
                team_row = tenants.find_team(session, team or "")
                api_key, token = tenants.create_key(session, team_row.id, role, name)
            key_id, team_id = api_key.id, api_key.team_id
    except FtqError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(json.dumps({"id": key_id, "team_id": team_id, "role": role, "key": token}))
    else:
        # The id (for revoke-key and the audit log) on stderr, the secret alone on stdout, so
        # KEY=$(ftq admin create-key …) keeps working.
        click.echo(
            f"key id {key_id} (team {team_id}, role {role}); the key below is shown only once:",
            err=True,
        )
        click.echo(token)


@admin.command("revoke-key")
@click.option("--team", "team", required=True, help="Team id or name.")
@click.argument("key_id")
def revoke_key(team: str, key_id: str) -> None:
    """Revoke an API key at once."""
    from service.db import session_scope
    from service.errors import FtqError
    from service.tenants import service as tenants

    try:
        with session_scope() as session:
            team_row = tenants.find_team(session, team)
            tenants.revoke_key(session, team_row.id, key_id)
    except FtqError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {key_id}")


def _every_page(fetch: Callable[[str | None], tuple[list[Any], bool]]) -> list[Any]:
    rows: list[Any] = []
    after: str | None = None
    while True:
        page, has_more = fetch(after)
        rows.extend(page)
        if not has_more or not page:
            return rows
        after = page[-1].id


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


@admin.command("list-teams")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per team.")
def list_teams(as_json: bool) -> None:
    """List every team (the platform team that holds operator keys is left out)."""
    from service.db import session_scope
    from service.tenants import service as tenants

    with session_scope() as session:
        teams = _every_page(lambda after: tenants.list_teams(session, after=after, limit=100))
        objects = [tenants.team_object(team) for team in teams]
    if as_json:
        for team_object in objects:
            click.echo(json.dumps(team_object))
        return
    if not objects:
        click.echo("no teams yet: ftq admin create-team NAME")
        return
    _table(
        ["ID", "NAME", "CREATED (UTC)"],
        [[t["id"], t["name"], _when(t["created_at"])] for t in objects],
    )


@admin.command("list-keys")
@click.option("--team", "team", default=None, help="Team id or name.")
@click.option("--operator", is_flag=True, help="List the platform-operator keys instead.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per key.")
def list_keys(team: str | None, operator: bool, include_revoked: bool, as_json: bool) -> None:
    """List a team's API keys: id, prefix, role, name, last use (never the key itself)."""
    from service.db import session_scope
    from service.errors import FtqError
    from service.tenants import service as tenants

    if operator == (team is not None):
        raise click.UsageError("Give either --team or --operator.")
    try:
        with session_scope() as session:
            team_id = (
                tenants.platform_team(session).id
                if operator
                else tenants.find_team(session, team or "").id
            )
            keys = _every_page(
                lambda after: tenants.list_keys(session, team_id, after=after, limit=100)
            )
            objects = [tenants.key_object(key) for key in keys]
    except FtqError as exc:
        raise click.ClickException(exc.message) from exc
    if not include_revoked:
        objects = [k for k in objects if not k["revoked"]]
    if as_json:
        for key_object in objects:
            click.echo(json.dumps({**key_object, "team_id": team_id}))
        return
    if not objects:
        click.echo(f"no {'active ' if not include_revoked else ''}keys for {team_id}")
        return
    _table(
        ["ID", "PREFIX", "ROLE", "NAME", "CREATED (UTC)", "LAST USED", "REVOKED"],
        [
            [
                k["id"],
                k["prefix"],
                k["role"],
                k["name"] or "-",
                _when(k["created_at"]),
                _when(k["last_used_at"]),
                _when(k["revoked_at"]) if k["revoked_at"] else "-",
            ]
            for k in objects
        ],
    )
