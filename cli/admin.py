"""``ftq admin``: teams and API keys, straight against the database."""

from __future__ import annotations

import json

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
