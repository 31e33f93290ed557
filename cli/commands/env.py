"""``envyard env ...``: environments on an envyard server (root options ``--api``, ``--token``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import SpecError
from envyard.cli.context import api_client, environment_name
from envyard.cli.output import emit, format_when, json_mode, table

__all__ = ["env_group"]


@click.group("env")
def env_group() -> None:
    """Environments on an envyard server (see the root options --api and --token)."""


@env_group.command("create")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("-f", "--file", "spec_file", required=True, type=click.Path(path_type=Path),
              help="environment.yml, requirements.txt or a lockfile.")
@click.option("-p", "--platform", "platforms", multiple=True, help="Platform to build (repeatable).")
@click.option("--relock", is_flag=True, help="Solve again even when an identical spec was built.")
@click.option("--no-image", is_flag=True, help="No OCI image.")
@click.option("--no-archive", is_flag=True, help="No environment archive.")
@click.option("--sbom", type=click.Choice(["spdx", "cyclonedx", "none"]), default="spdx", show_default=True)
@click.option("--channel-alias", metavar="URL", help="Base URL for channel names on the builder.")
@click.option("--description", default="", help="Description of a new environment.")
@click.option("--wait", is_flag=True, help="Follow the build until it ends; exit 4 if it fails.")
@click.option("--json", "json_output", is_flag=True, help="Print the build as JSON.")
@click.pass_context
def env_create(ctx: click.Context, environment: str, spec_file: Path, platforms: tuple[str, ...], relock: bool,
               no_image: bool, no_archive: bool, sbom: str, channel_alias: str | None, description: str,
               wait: bool, json_output: bool) -> None:
    """Create NAMESPACE/NAME (if needed) and build the spec in FILE."""
    json_mode(ctx, json_output)
    namespace, name = environment_name(environment)
    try:
        spec = spec_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {spec_file}", file=spec_file,
                        hint=f"a relative path is resolved against the current directory, {Path.cwd()}"
                        if not spec_file.is_absolute() else "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec: {exc}", file=spec_file, hint="pass an environment.yml with -f") \
            from None
    from envyard.builder.spec_inline import inline_includes

    spec = inline_includes(spec, spec_file)  # the server reads no files: pip -r FILE goes in as FILE's lines
    body = {"namespace": namespace, "name": name, "spec": spec,
            "filename": re.sub(r"[^A-Za-z0-9._-]", "_", spec_file.name)[:200], "platforms": list(platforms),
            "options": {"image": not no_image, "archive": not no_archive, "sbom": None if sbom == "none" else sbom,
                        "channel_alias": channel_alias},
            "relock": relock, "description": description}
    client = api_client(ctx)
    build = client.json("POST", "/api/v1/environments", json=body)
    if not json_output:
        click.echo(f"build {build['id']} {_submitted_state(build, f'{namespace}/{name}')}")
    if wait:
        from envyard.cli.follow import follow_build

        final = follow_build(ctx, client, build, json_output)
        if not json_output:
            click.echo(f"build {final['id']} completed: {final['package_count']} packages"
                       + (f", image {final['image_reference']}" if final.get("image_reference") else ""))
    elif json_output:
        emit(build)


def _submitted_state(build: dict[str, Any], environment: str) -> str:
    """How a submission went: queued, or reused, and whether the reused build is (or will be) current."""
    if not build["reused"]:
        return "queued"
    state = f"reused (identical spec): {build['status']}"
    if build["status"] == "completed":
        return state + (f", now the current build of {environment}" if build["current"]
                        else f", not the current build of {environment}")
    return state + f" (it becomes the current build of {environment} when it completes)"


@env_group.command("list")
@click.option("--namespace", help="Only this namespace.")
@click.option("--name", help="Names containing this.")
@click.option("--package", help="Whose current build contains this package.")
@click.option("--package-version", help="... at this exact version.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500), help="Page size.")
@click.option("--all", "all_pages", is_flag=True, help="Follow every page.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def env_list(ctx: click.Context, namespace: str | None, name: str | None, package: str | None,
             package_version: str | None, limit: int, all_pages: bool, json_output: bool) -> None:
    """List environments with their current build."""
    json_mode(ctx, json_output)
    client = api_client(ctx)
    params = {k: v for k, v in {"namespace": namespace, "name": name, "package": package,
                                "package_version": package_version, "limit": limit}.items() if v is not None}
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.json("GET", "/api/v1/environments", params={**params, **({"cursor": cursor} if cursor else {})})
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor or not all_pages:
            break
    if json_output:
        emit({"items": items, "next_cursor": cursor})
        return
    rows = []
    for env in items:
        build = env.get("current_build") or {}
        rows.append([f"{env['namespace']}/{env['name']}", build.get("id", "-"), build.get("status", "-"),
                     build.get("package_count", "-"), format_when(env["updated_at"])])
    table("environment", "current build", "status", "packages", "updated", rows=rows)
    if cursor:
        click.echo("(more environments: pass --all)", err=True)


@env_group.command("show")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def env_show(ctx: click.Context, environment: str, json_output: bool) -> None:
    """An environment, its current build and its latest builds."""
    json_mode(ctx, json_output)
    namespace, name = environment_name(environment)
    client = api_client(ctx)
    env = client.json("GET", f"/api/v1/environments/{namespace}/{name}")
    if json_output:
        emit(env)
        return
    current = env.get("current_build")
    click.echo(f"{namespace}/{name}" + (f": {env['description']}" if env["description"] else ""))
    click.echo(f"created {format_when(env['created_at'])}, updated {format_when(env['updated_at'])}")
    click.echo(f"current build: {current['id']} ({current['package_count']} packages)" if current
               else "current build: none yet")
    if deprecated := env.get("deprecated"):
        successor = f"; use {deprecated['successor']} instead" if deprecated.get("successor") else ""
        click.echo(f"DEPRECATED since {format_when(deprecated['deprecated_at'])}{successor}"
                   + (f": {deprecated['message']}" if deprecated.get("message") else ""))
    builds = client.json("GET", "/api/v1/builds", params={"environment": f"{namespace}/{name}", "limit": 10})
    table("build", "status", "platforms", "created", rows=[
        [b["id"], b["status"] + (" (current)" if b["current"] else ""), ",".join(b["platforms"]) or "-",
         format_when(b["timestamps"].get("created_at"))] for b in builds["items"]])


@env_group.command("rollback")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.argument("build_id", metavar="BUILD", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def env_rollback(ctx: click.Context, environment: str, build_id: int, json_output: bool) -> None:
    """Make completed build BUILD the environment's current build."""
    json_mode(ctx, json_output)
    namespace, name = environment_name(environment)
    env = api_client(ctx).json("PUT", f"/api/v1/environments/{namespace}/{name}/current", json={"build_id": build_id})
    if json_output:
        emit(env)
    else:
        click.echo(f"{namespace}/{name} now at build {build_id}")


@env_group.command("delete")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.pass_context
def env_delete(ctx: click.Context, environment: str, yes: bool) -> None:
    """Delete an environment and its builds' records (asks first, unless --yes)."""
    namespace, name = environment_name(environment)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to delete {namespace}/{name} without --yes: stdin is not a terminal "
                                   "to confirm on", ctx)
        click.confirm(f"Delete {namespace}/{name} and the records of all its builds?", abort=True, err=True)
    api_client(ctx).request("DELETE", f"/api/v1/environments/{namespace}/{name}")
    click.echo(f"deleted {namespace}/{name}")


@env_group.command("source")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("--repo", "repo_url", required=True, metavar="URL",
              help="The git repository holding the spec: an absolute path on the server or an http(s) URL.")
@click.option("--path", "spec_path", required=True, metavar="PATH", help="The spec's path in the repository.")
@click.option("--branch", metavar="BRANCH", help="Only pushes to this branch rebuild (default: any).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def env_source(ctx: click.Context, environment: str, repo_url: str, spec_path: str, branch: str | None,
               json_output: bool) -> None:
    """Rebuild NAMESPACE/NAME when a push to REPO changes PATH (the server's /api/v1/hooks/github|gitlab)."""
    json_mode(ctx, json_output)
    namespace, name = environment_name(environment)
    source = api_client(ctx).json("PUT", f"/api/v1/environments/{namespace}/{name}/source",
                                  json={"repo_url": repo_url, "path": spec_path, "branch": branch})
    if json_output:
        emit(source)
    else:
        click.echo(f"{namespace}/{name} follows {source['path']} in {source['repo_url']}"
                   + (f" (branch {source['branch']})" if source["branch"] else ""))


@env_group.command("schedule")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("--cron", required=True, metavar="EXPR", help="When to relock, e.g. '0 6 * * 1' (UTC).")
@click.option("--notify-url", metavar="URL", help="POST a signed JSON notification here when the solve changes.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def env_schedule(ctx: click.Context, environment: str, cron: str, notify_url: str | None, json_output: bool) -> None:
    """Relock NAMESPACE/NAME on a schedule; a build is queued only when the solve result changes."""
    json_mode(ctx, json_output)
    namespace, name = environment_name(environment)
    schedule = api_client(ctx).json("PUT", f"/api/v1/environments/{namespace}/{name}/schedule",
                                    json={"cron": cron, "notify_url": notify_url})
    if json_output:
        emit(schedule)
    else:
        click.echo(f"{namespace}/{name} relocks on '{schedule['cron']}', next at {schedule['next_run_at']}")
