"""``envyard token ...``: API tokens of the caller's user (or, with an admin token, of anybody): create (the
secret is shown once), list, revoke."""

from __future__ import annotations

import re
from typing import Any

import click

from envyard.builder.errors import SpecError
from envyard.cli.context import api_client
from envyard.cli.output import emit, format_when, json_mode, table

__all__ = ["parse_duration", "token_group"]

DURATION = re.compile(r"^(\d+)([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
GLOBAL_ROLES = ("admin", "user", "reader", "worker")
NAMESPACE_ROLES = ("viewer", "editor")


def parse_duration(value: str) -> int:
    """Seconds in ``30d``, ``12h``, ``90m``, ``3600s``, ``2w``.

    >>> parse_duration("30d"), parse_duration("90m")
    (2592000, 5400)
    """
    found = DURATION.match(value.strip())
    if found is None or int(found[1]) == 0:
        raise SpecError(f"'{value}' is not a duration", field="--expires",
                        hint="a number and a unit: 30d, 12h, 90m, 3600s, 2w")
    return int(found[1]) * UNIT_SECONDS[found[2]]


@click.group("token")
def token_group() -> None:
    """API tokens: create (shown once), list, revoke (root options --api, --token)."""


@token_group.command("create")
@click.option("--name", required=True, help="What the token is for (e.g. ci-nightly).")
@click.option("--role", type=click.Choice([*GLOBAL_ROLES, *NAMESPACE_ROLES]), default="user", show_default=True,
              help="admin/user/reader/worker: the global role (admins only for admin and worker); viewer/editor: "
              "a user token whose role on any namespace is at most that.")
@click.option("--namespace", "namespaces", multiple=True, metavar="GLOB",
              help="Limit the token to these namespaces (repeatable; globs: team-*).")
@click.option("--expires", metavar="DURATION", help="Expire after DURATION (30d, 12h, 90m).")
@click.option("--user", metavar="NAME", help="The owner: a user or service account (admin token).")
@click.option("--read-only", is_flag=True, help="Read and pull only.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def token_create(ctx: click.Context, name: str, role: str, namespaces: tuple[str, ...], expires: str | None,
                 user: str | None, read_only: bool, json_output: bool) -> None:
    """A new token; its secret is printed once (under --json: the ``token`` field)."""
    json_mode(ctx, json_output)
    body: dict[str, Any] = {"name": name, "role": role if role in GLOBAL_ROLES else "user",
                            "read_only": read_only or role == "viewer"}
    if role in NAMESPACE_ROLES:
        body["max_role"] = role
    if namespaces:
        body["namespaces"] = list(namespaces)
    if expires:
        body["expires_in_seconds"] = parse_duration(expires)
    if user:
        body["user"] = user
    created = api_client(ctx).json("POST", "/api/v1/tokens", json=body)
    if json_output:
        emit(created)
        return
    owner = f" of {created['user']}" if created.get("user") else ""
    until = f", expires {format_when(created['expires_at'])}" if created.get("expires_at") else ""
    click.echo(f"token {created['id']} ({created['name']}{owner}, {created['role']}{until}); shown only now:",
               err=True)
    click.echo(created["token"])


@token_group.command("list")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def token_list(ctx: click.Context, json_output: bool) -> None:
    """Your tokens (every token, with an admin token); never their secrets."""
    json_mode(ctx, json_output)
    tokens: list[dict[str, Any]] = api_client(ctx).json("GET", "/api/v1/tokens")
    if json_output:
        emit(tokens)
        return
    table("id", "name", "user", "role", "limits", "created", "expires", "state", rows=[
        [t["id"], t["name"], t["user"] or "-", t["role"], _limits(t), format_when(t["created_at"]),
         format_when(t["expires_at"]), "revoked" if t["revoked"] else "active"] for t in tokens])


def _limits(token: dict[str, Any]) -> str:
    parts = [f"max {token['max_role']}"] if token.get("max_role") else []
    if token.get("read_only"):
        parts.append("read-only")
    if token.get("namespaces") is not None:
        parts.append("namespaces " + ",".join(token["namespaces"]))
    return "; ".join(parts) or "-"


@token_group.command("revoke")
@click.argument("token_id", metavar="TOKEN_ID", type=click.IntRange(min=1))
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke token TOKEN_ID (yours, or any with an admin token): refused at once on every server replica."""
    api_client(ctx).request("DELETE", f"/api/v1/tokens/{token_id}")
    click.echo(f"token {token_id} is revoked")
