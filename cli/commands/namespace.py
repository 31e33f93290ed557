"""``envyard namespace ...``: namespaces, who may read and build in them, and which are public (admin token).

A user or reader token reads a namespace it has a grant on (viewer: read and pull; editor: also build; a
reader token never builds); a public namespace is readable without a token. Changes take effect within a few
seconds on every server replica (principals are cached that long).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from envyard.builder.errors import SpecError, UsageError
from envyard.cli.context import NAME, api_client
from envyard.cli.output import emit, format_when, json_mode, table

__all__ = ["namespace_group"]


def _namespace(value: str) -> str:
    if not NAME.match(value):
        raise SpecError(f"'{value}' is not a namespace name", field="NAMESPACE",
                        hint="letters, digits, '.', '_' and '-', e.g. data-science")
    return value


@click.group("namespace")
def namespace_group() -> None:
    """Namespaces: list, make public or private, allow sdists, grant tokens access (root options --api, --token)."""


@namespace_group.command("list")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def namespace_list(ctx: click.Context, json_output: bool) -> None:
    """The namespaces the token may read."""
    json_mode(ctx, json_output)
    namespaces = api_client(ctx).json("GET", "/api/v1/namespaces")
    if json_output:
        emit(namespaces)
        return
    table("namespace", "environments", "public", "sdists", "created", "description", rows=[
        [n["name"], n["environments"], "yes" if n["public"] else "no", "yes" if n.get("allow_sdists") else "no",
         format_when(n["created_at"]), n["description"]] for n in namespaces])


@namespace_group.command("public")
@click.argument("namespace")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def namespace_public(ctx: click.Context, namespace: str, state: str, json_output: bool) -> None:
    """Make NAMESPACE public (on: anyone may read and pull it, without a token) or private (off)."""
    json_mode(ctx, json_output)
    found = api_client(ctx).json("PATCH", f"/api/v1/namespaces/{_namespace(namespace)}", json={"public": state == "on"})
    if json_output:
        emit(found)
    else:
        click.echo(f"{namespace} is {'public: anyone may read and pull it' if found['public'] else 'private'}")


@namespace_group.command("sdists")
@click.argument("namespace")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def namespace_sdists(ctx: click.Context, namespace: str, state: str, json_output: bool) -> None:
    """Allow (on) or forbid (off) pip source distributions in NAMESPACE's builds (admin token).

    Off (the default), pip packages are resolved and installed from wheels only. Building an sdist runs code
    from the package index on the worker (inside its build sandbox): allow it only for trusted submitters.
    """
    json_mode(ctx, json_output)
    found = api_client(ctx).json("PATCH", f"/api/v1/namespaces/{_namespace(namespace)}",
                              json={"allow_sdists": state == "on"})
    if json_output:
        emit(found)
    elif found["allow_sdists"]:
        click.echo(f"{namespace}: builds may build pip source distributions (their code runs on the workers)")
    else:
        click.echo(f"{namespace}: builds use pip wheels only")


@namespace_group.command("grant")
@click.argument("namespace")
@click.argument("token_id", metavar="TOKEN_ID", type=int)
@click.option("--role", type=click.Choice(["viewer", "editor"]), default="viewer", show_default=True,
              help="viewer: read and pull; editor: also build.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def namespace_grant(ctx: click.Context, namespace: str, token_id: int, role: str, json_output: bool) -> None:
    """Give token TOKEN_ID (a user or reader token) ROLE on NAMESPACE."""
    json_mode(ctx, json_output)
    grant = api_client(ctx).json("PUT", f"/api/v1/namespaces/{_namespace(namespace)}/grants/{token_id}",
                              json={"role": role})
    if json_output:
        emit(grant)
    else:
        click.echo(f"token {token_id} ({grant['token_name']}) is {grant['role']} of {namespace}")


@namespace_group.command("revoke")
@click.argument("namespace")
@click.argument("token_id", metavar="TOKEN_ID", type=int)
@click.pass_context
def namespace_revoke(ctx: click.Context, namespace: str, token_id: int) -> None:
    """Remove token TOKEN_ID's grant on NAMESPACE."""
    api_client(ctx).request("DELETE", f"/api/v1/namespaces/{_namespace(namespace)}/grants/{token_id}")
    click.echo(f"token {token_id} has no grant on {namespace} any more")


@namespace_group.command("grants")
@click.argument("namespace")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def namespace_grants(ctx: click.Context, namespace: str, json_output: bool) -> None:
    """The tokens with a grant on NAMESPACE."""
    json_mode(ctx, json_output)
    grants: list[dict[str, Any]] = api_client(ctx).json("GET", f"/api/v1/namespaces/{_namespace(namespace)}/grants")
    if json_output:
        emit(grants)
        return
    table("token", "name", "token role", "role", "since", rows=[
        [g["token_id"], g["token_name"], g["token_role"], g["role"], format_when(g["created_at"])] for g in grants])


@namespace_group.group("secret")
def namespace_secret() -> None:
    """Secrets of a namespace (e.g. DVC remote credentials as JSON), stored encrypted; values are never shown."""


@namespace_secret.command("set")
@click.argument("namespace")
@click.argument("name")
@click.option("--from-env", "from_env", metavar="VAR", help="Take the value from environment variable VAR.")
@click.option("--value-stdin", is_flag=True, help="Read the value from standard input.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def namespace_secret_set(ctx: click.Context, namespace: str, name: str, from_env: str | None, value_stdin: bool,
                         json_output: bool) -> None:
    """Create or replace secret NAME of NAMESPACE (editor). The value never goes on the command line: give
    --from-env VAR or --value-stdin. For a DVC remote, store a JSON object such as
    {"access_key_id": "...", "secret_access_key": "...", "endpointurl": "https://minio.example.com"}."""
    json_mode(ctx, json_output)
    if bool(from_env) == value_stdin:
        raise UsageError("give exactly one of --from-env VAR and --value-stdin", field="value",
                         hint="e.g. envyard namespace secret set team dvc-minio --value-stdin < creds.json")
    if from_env:
        value = os.environ.get(from_env)
        if not value:
            raise UsageError(f"environment variable {from_env} is not set or empty", field="--from-env",
                             hint=f"export {from_env}=... first, or use --value-stdin")
    else:
        value = sys.stdin.read().rstrip("\n")
        if not value:
            raise UsageError("standard input is empty", field="--value-stdin", hint="pipe the value in")
    found = api_client(ctx).json("PUT", f"/api/v1/namespaces/{_namespace(namespace)}/secrets/{name}",
                                 json={"value": value})
    if json_output:
        emit(found)
    else:
        click.echo(f"secret {name} of {namespace} is set")


@namespace_secret.command("list")
@click.argument("namespace")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def namespace_secret_list(ctx: click.Context, namespace: str, json_output: bool) -> None:
    """The secrets of NAMESPACE: names and dates (values are never shown)."""
    json_mode(ctx, json_output)
    found: list[dict[str, Any]] = api_client(ctx).json("GET", f"/api/v1/namespaces/{_namespace(namespace)}/secrets")
    if json_output:
        emit(found)
        return
    table("name", "created", "updated", rows=[
        [s["name"], format_when(s["created_at"]), format_when(s["updated_at"])] for s in found])


@namespace_secret.command("delete")
@click.argument("namespace")
@click.argument("name")
@click.pass_context
def namespace_secret_delete(ctx: click.Context, namespace: str, name: str) -> None:
    """Delete secret NAME of NAMESPACE."""
    api_client(ctx).request("DELETE", f"/api/v1/namespaces/{_namespace(namespace)}/secrets/{name}")
    click.echo(f"secret {name} of {namespace} is deleted")
