"""``envyard access ...``: role bindings (viewer, editor, admin on ``namespace/environment`` globs for users,
groups and tokens), users and service accounts, and ``check``, which explains a verdict (admin token)."""

from __future__ import annotations

from typing import Any

import click

from envyard.cli.context import api_client
from envyard.cli.output import emit, format_when, json_mode, table

__all__ = ["access_group"]


@click.group("access")
def access_group() -> None:
    """Who may do what where: role bindings, users, and the explained verdict (admin token)."""


def _subject(user: str | None, group: str | None, token: int | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("user", user), ("group", group), ("token", token)) if v is not None]
    if len(given) != 1:
        raise click.UsageError("name exactly one subject: --user NAME, --group NAME or --token ID")
    return given[0][0], str(given[0][1])


@access_group.command("bind")
@click.argument("role", type=click.Choice(["viewer", "editor", "admin"]))
@click.argument("pattern")
@click.option("--user", metavar="NAME", help="A user or service account.")
@click.option("--group", metavar="NAME", help="A group (as the identity provider names it).")
@click.option("--token", "token_id", metavar="ID", type=int, help="A token.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def access_bind(ctx: click.Context, role: str, pattern: str, user: str | None, group: str | None,
                token_id: int | None, json_output: bool) -> None:
    """Give ROLE on PATTERN (namespace/environment globs: '*/*', 'team-*/*', 'global/python-*') to a subject."""
    json_mode(ctx, json_output)
    kind, subject = _subject(user, group, token_id)
    row = api_client(ctx).json("POST", "/api/v1/admin/bindings", json={
        "role": role, "pattern": pattern, "subject_kind": kind, "subject": subject})
    if json_output:
        emit(row)
    else:
        click.echo(f"binding {row['id']}: {kind} {subject} is {row['role']} on {row['pattern']}")


@access_group.command("unbind")
@click.argument("binding_id", metavar="BINDING_ID", type=click.IntRange(min=1))
@click.pass_context
def access_unbind(ctx: click.Context, binding_id: int) -> None:
    """Remove binding BINDING_ID (see envyard access list)."""
    api_client(ctx).request("DELETE", f"/api/v1/admin/bindings/{binding_id}")
    click.echo(f"binding {binding_id} is removed")


@access_group.command("list")
@click.option("--user", metavar="NAME")
@click.option("--group", metavar="NAME")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def access_list(ctx: click.Context, user: str | None, group: str | None, json_output: bool) -> None:
    """Role bindings (of one user or group)."""
    json_mode(ctx, json_output)
    params = {"subject_kind": "user", "subject": user} if user else (
        {"subject_kind": "group", "subject": group} if group else {})
    rows: list[dict[str, Any]] = api_client(ctx).json("GET", "/api/v1/admin/bindings", params=params)
    if json_output:
        emit(rows)
        return
    table("id", "subject", "role", "pattern", "by", "created", rows=[
        [r["id"], f"{r['subject_kind']} {r['subject']}", r["role"], r["pattern"], r["created_by"] or "-",
         format_when(r["created_at"])] for r in rows])


@access_group.command("users")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def access_users(ctx: click.Context, json_output: bool) -> None:
    """Users and service accounts, with their groups and personal namespaces."""
    json_mode(ctx, json_output)
    rows: list[dict[str, Any]] = api_client(ctx).json("GET", "/api/v1/admin/users")
    if json_output:
        emit(rows)
        return
    table("id", "name", "kind", "provider", "namespace", "groups", "last sign-in", rows=[
        [u["id"], u["name"], u["kind"], u["provider"], u["namespace"] or "-", ", ".join(u["groups"]) or "-",
         format_when(u["last_login_at"])] for u in rows])


@access_group.command("add-user")
@click.argument("name")
@click.option("--service", is_flag=True, help="A service account (for CI) rather than a person.")
@click.option("--group", "groups", multiple=True, metavar="NAME", help="A group (repeatable).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def access_add_user(ctx: click.Context, name: str, service: bool, groups: tuple[str, ...], json_output: bool) -> None:
    """Add a user or service account NAME (with a personal namespace); then: envyard token create --user NAME."""
    json_mode(ctx, json_output)
    user = api_client(ctx).json("POST", "/api/v1/admin/users", json={
        "name": name, "kind": "service" if service else "user", "groups": list(groups)})
    if json_output:
        emit(user)
    else:
        click.echo(f"{user['kind']} {user['name']} (personal namespace {user['namespace']})")


@access_group.command("check")
@click.argument("subject")
@click.argument("action", type=click.Choice(["read", "write", "admin"]))
@click.argument("resource")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def access_check(ctx: click.Context, subject: str, action: str, resource: str, json_output: bool) -> None:
    """May SUBJECT (a user or service account, or token:ID) ACTION RESOURCE (NAMESPACE or NAMESPACE/ENV)? Shows
    the binding that allowed it, or why none did."""
    json_mode(ctx, json_output)
    verdict = api_client(ctx).json("GET", "/api/v1/admin/access/check",
                                   params={"subject": subject, "action": action, "resource": resource})
    if json_output:
        emit(verdict)
        return
    click.echo(f"{'allowed' if verdict['allowed'] else 'denied'}: {subject} {action} {resource}")
    for reason in verdict["reasons"]:
        click.echo(f"  {reason}")
    if not verdict["allowed"] and verdict["bindings"]:
        click.echo("  bindings of the subject: " + "; ".join(verdict["bindings"]))
