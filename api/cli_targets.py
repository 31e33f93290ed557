"""``envyard target ...`` (registry targets of a namespace, admin) and ``envyard build publish|publications``."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from envyard.api.cli_client import NAME, _client, _emit, _json_mode, _size, _table, _when, build_group
from envyard.builder.errors import RegistryError, SpecError

POLL_SECONDS = 0.5
FINISHED = {"pushed", "failed"}


def _name(value: str, argument: str) -> str:
    if not NAME.match(value):
        raise SpecError(f"'{value}' is not a valid name", field=argument,
                        hint="letters, digits, '.', '_' and '-', starting with a letter or digit")
    return value


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
    _json_mode(ctx, json_output)
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
    body = {"name": _name(name, "NAME"), "url": url, "repository": repository, "username": username,
            "password": password, "tls_verify": not insecure, "enabled": not disabled}
    target = _client(ctx).json("POST", f"/api/v1/namespaces/{_name(namespace, 'NAMESPACE')}/registry-targets",
                               json=body)
    if json_output:
        _emit(target)
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
    _json_mode(ctx, json_output)
    targets = _client(ctx).json("GET", f"/api/v1/namespaces/{_name(namespace, 'NAMESPACE')}/registry-targets")
    if json_output:
        _emit(targets)
        return
    _table("target", "url", "repository", "user", "tls", "enabled", rows=[
        [t["name"], t["url"], t["repository"], t["username"] or "-", "verify" if t["tls_verify"] else "insecure",
         "yes" if t["enabled"] else "no"] for t in targets])


@target_group.command("remove")
@click.argument("namespace")
@click.argument("name")
@click.pass_context
def target_remove(ctx: click.Context, namespace: str, name: str) -> None:
    """Remove target NAME of NAMESPACE and the record of its publications (pushed images stay in the registry)."""
    _client(ctx).request("DELETE", f"/api/v1/namespaces/{_name(namespace, 'NAMESPACE')}/registry-targets/"
                                   f"{_name(name, 'NAME')}")
    click.echo(f"removed target {name} of {namespace}")


def _show(publications: list[dict[str, Any]]) -> None:
    if not publications:
        click.echo("no publications")
        return
    _table("target", "status", "attempt", "blobs up/mounted/existing", "uploaded", "finished", "reference", rows=[
        [p["target"], p["status"], p["attempt"], f"{p['uploaded_blobs']}/{p['mounted_blobs']}/{p['existing_blobs']}",
         _size(p["uploaded_bytes"]), _when(p["finished_at"]), p["reference"] or "-"] for p in publications])
    for p in publications:
        if p.get("error"):
            click.echo(f"{p['target']}: {p['error']}")


@build_group.command("publish")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--target", metavar="NAME", help="Only this target [default: every enabled target].")
@click.option("--wait", is_flag=True, help="Wait until every publication is pushed or failed; exit 5 if one failed.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_publish(ctx: click.Context, build_id: int, target: str | None, wait: bool, json_output: bool) -> None:
    """Push build ID to its namespace's registry targets now (again, if it was pushed or failed before)."""
    _json_mode(ctx, json_output)
    client = _client(ctx)
    body = {"target": _name(target, "--target")} if target else {}
    publications = client.json("POST", f"/api/v1/builds/{build_id}/publications", json=body)
    wanted = {p["id"] for p in publications}
    while wait and any(p["status"] not in FINISHED for p in publications):
        time.sleep(POLL_SECONDS)
        publications = [p for p in client.json("GET", f"/api/v1/builds/{build_id}/publications")
                        if p["id"] in wanted]
    if json_output:
        _emit(publications)
    else:
        if not wait:
            click.echo(f"build {build_id}: publishing to {', '.join(p['target'] for p in publications)}")
        _show(publications)
    failed = [p for p in publications if p["status"] == "failed"]
    if wait and failed:
        raise RegistryError(f"build {build_id} was not published to {', '.join(p['target'] for p in failed)}: "
                            + "; ".join(p["error"] or "failed" for p in failed))


@build_group.command("publications")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_publications(ctx: click.Context, build_id: int, json_output: bool) -> None:
    """Where build ID was (or is being) pushed: status, attempts, blob counts, errors."""
    _json_mode(ctx, json_output)
    publications = _client(ctx).json("GET", f"/api/v1/builds/{build_id}/publications")
    if json_output:
        _emit(publications)
    else:
        _show(publications)


def register(cli: click.Group) -> None:
    cli.add_command(target_group)
