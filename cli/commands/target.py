"""``envyard target ...``: the registry targets of a namespace (admin token); ``envyard build publish`` pushes to
them."""

from __future__ import annotations

import sys

import click

from envyard.builder.errors import SpecError
from envyard.cli.context import api_client, check_name
from envyard.cli.output import emit, json_mode, table

__all__ = ["target_group"]


@click.group("target")
def target_group() -> None:
    """Registries a namespace's completed builds are pushed to (admin token)."""


@target_group.command("add")
@click.argument("namespace")
@click.argument("name")
@click.argument("url")
@click.option("--repository", default="{namespace}/{environment}", show_default=True, metavar="TEMPLATE",
              help="Repository in the registry; {namespace} and {environment} are replaced (in lower case).")
@click.option("--username", metavar="U", help="User name on the registry.")
@click.option("--password-stdin", is_flag=True, help="Read the password (or token) from standard input.")
@click.option("--insecure", is_flag=True, help="Do not check the registry's TLS certificate.")
@click.option("--disabled", is_flag=True, help="Do not publish completed builds automatically (only on request).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def target_add(ctx: click.Context, namespace: str, name: str, url: str, repository: str, username: str | None,
               password_stdin: bool, insecure: bool, disabled: bool, json_output: bool) -> None:
    """Push NAMESPACE's completed builds to the registry at URL (http(s)://host[:port]) as target NAME."""
    json_mode(ctx, json_output)
    password = None
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
        if not password:
            raise SpecError("standard input held no password", field="--password-stdin",
                            hint="pipe it in: printf %s \"$TOKEN\" | envyard target add ... --password-stdin")
    if bool(username) != bool(password):
        raise SpecError("a username needs a password and a password a username",
                        field="--password-stdin" if username else "--username",
                        hint="pass --username U and the password on standard input with --password-stdin")
    body = {"name": check_name(name, "NAME"), "url": url, "repository": repository, "username": username,
            "password": password, "tls_verify": not insecure, "enabled": not disabled}
    target = api_client(ctx).json("POST", f"/api/v1/namespaces/{check_name(namespace, 'NAMESPACE')}/registry-targets",
                               json=body)
    if json_output:
        emit(target)
    else:
        click.echo(f"added target {name} of {namespace}: {target['url']}/{target['repository']}"
                   + (f" as {target['username']}" if target["username"] else "")
                   + ("" if target["enabled"] else " (disabled)"))


@target_group.command("list")
@click.argument("namespace")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def target_list(ctx: click.Context, namespace: str, json_output: bool) -> None:
    """The registry targets of NAMESPACE."""
    json_mode(ctx, json_output)
    targets = api_client(ctx).json("GET", f"/api/v1/namespaces/{check_name(namespace, 'NAMESPACE')}/registry-targets")
    if json_output:
        emit(targets)
        return
    table("target", "url", "repository", "user", "tls", "enabled", rows=[
        [t["name"], t["url"], t["repository"], t["username"] or "-", "verify" if t["tls_verify"] else "insecure",
         "yes" if t["enabled"] else "no"] for t in targets])


@target_group.command("remove")
@click.argument("namespace")
@click.argument("name")
@click.pass_context
def target_remove(ctx: click.Context, namespace: str, name: str) -> None:
    """Remove target NAME of NAMESPACE and the record of its publications (pushed images stay in the registry)."""
    api_client(ctx).request("DELETE", f"/api/v1/namespaces/{check_name(namespace, 'NAMESPACE')}/registry-targets/"
                                   f"{check_name(name, 'NAME')}")
    click.echo(f"removed target {name} of {namespace}")
