"""``envyard env ...`` and ``envyard build ...``: the CLI against an envyard server (``--api``, ``--token``).

All HTTP goes through :class:`worker.client.ApiClient`, so the server's problem details come back as the typed
error they name and the root group prints them as one line with their exit code.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envyard.api.cli import ServerOptions
from envyard.builder.errors import NotFoundError, SpecError

if TYPE_CHECKING:
    from envyard.worker.client import ApiClient

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # api.schemas.NAME_PATTERN
RETRY_SECONDS = 3.0


def _client(ctx: click.Context) -> ApiClient:
    from envyard.api.cli_progress import CliApiClient

    options = ctx.find_root().obj  # not isinstance: under ``python -m envyard.cli`` the root is __main__'s class
    if not hasattr(options, "resolve_token"):
        options = ServerOptions()
    logging.getLogger("envyard.worker").addHandler(logging.NullHandler())  # no retry chatter on stderr
    client = CliApiClient(options.api_url, options.resolve_token(), retry_seconds=RETRY_SECONDS)
    ctx.call_on_close(client.close)
    return client


def _env(value: str, argument: str = "environment") -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not NAME.match(namespace) or not NAME.match(name):
        raise SpecError(f"'{value}' is not NAMESPACE/NAME", field=argument,
                        hint="write the environment as NAMESPACE/NAME, e.g. data-science/pytorch (letters, digits, "
                             "'.', '_', '-')")
    return namespace, name


def _json_mode(ctx: click.Context, json_output: bool) -> bool:
    ctx.meta["json_output"] = json_output
    return json_output


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _table(*columns: str, rows: list[list[Any]]) -> None:
    from rich.table import Table

    from envyard.api.cli import rich_console

    table = Table(*columns, box=None, header_style="bold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    rich_console().print(table)


# --- env ------------------------------------------------------------------------------------------------------------


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
    _json_mode(ctx, json_output)
    namespace, name = _env(environment)
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
    client = _client(ctx)
    build = client.json("POST", "/api/v1/environments", json=body)
    if not json_output:
        click.echo(f"build {build['id']} {_submitted_state(build, f'{namespace}/{name}')}")
    if wait:
        from envyard.api.cli_progress import follow_build

        final = follow_build(ctx, client, build, json_output)
        if not json_output:
            click.echo(f"build {final['id']} completed: {final['package_count']} packages"
                       + (f", image {final['image_reference']}" if final.get("image_reference") else ""))
    elif json_output:
        _emit(build)


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
    _json_mode(ctx, json_output)
    client = _client(ctx)
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
        _emit({"items": items, "next_cursor": cursor})
        return
    rows = []
    for env in items:
        build = env.get("current_build") or {}
        rows.append([f"{env['namespace']}/{env['name']}", build.get("id", "-"), build.get("status", "-"),
                     build.get("package_count", "-"), _when(env["updated_at"])])
    _table("environment", "current build", "status", "packages", "updated", rows=rows)
    if cursor:
        click.echo("(more environments: pass --all)", err=True)


@env_group.command("show")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def env_show(ctx: click.Context, environment: str, json_output: bool) -> None:
    """An environment, its current build and its latest builds."""
    _json_mode(ctx, json_output)
    namespace, name = _env(environment)
    client = _client(ctx)
    env = client.json("GET", f"/api/v1/environments/{namespace}/{name}")
    if json_output:
        _emit(env)
        return
    current = env.get("current_build")
    click.echo(f"{namespace}/{name}" + (f": {env['description']}" if env["description"] else ""))
    click.echo(f"created {_when(env['created_at'])}, updated {_when(env['updated_at'])}")
    click.echo(f"current build: {current['id']} ({current['package_count']} packages)" if current
               else "current build: none yet")
    builds = client.json("GET", "/api/v1/builds", params={"environment": f"{namespace}/{name}", "limit": 10})
    _table("build", "status", "platforms", "created", rows=[
        [b["id"], b["status"] + (" (current)" if b["current"] else ""), ",".join(b["platforms"]) or "-",
         _when(b["timestamps"].get("created_at"))] for b in builds["items"]])


@env_group.command("rollback")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.argument("build_id", metavar="BUILD", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def env_rollback(ctx: click.Context, environment: str, build_id: int, json_output: bool) -> None:
    """Make completed build BUILD the environment's current build."""
    _json_mode(ctx, json_output)
    namespace, name = _env(environment)
    env = _client(ctx).json("PUT", f"/api/v1/environments/{namespace}/{name}/current", json={"build_id": build_id})
    if json_output:
        _emit(env)
    else:
        click.echo(f"{namespace}/{name} now at build {build_id}")


@env_group.command("delete")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.pass_context
def env_delete(ctx: click.Context, environment: str, yes: bool) -> None:
    """Delete an environment and its builds' records (asks first, unless --yes)."""
    namespace, name = _env(environment)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to delete {namespace}/{name} without --yes: stdin is not a terminal "
                                   "to confirm on", ctx)
        click.confirm(f"Delete {namespace}/{name} and the records of all its builds?", abort=True, err=True)
    _client(ctx).request("DELETE", f"/api/v1/environments/{namespace}/{name}")
    click.echo(f"deleted {namespace}/{name}")


# --- build ----------------------------------------------------------------------------------------------------------


@click.group("build")
def build_group() -> None:
    """Builds on an envyard server: show, logs, cancel, diff, list, download."""


@build_group.command("show")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--json", "json_output", is_flag=True, help="The build with an 'artifacts' list.")
@click.pass_context
def build_show(ctx: click.Context, build_id: int, json_output: bool) -> None:
    """A build: status, stage times, error and artifacts."""
    _json_mode(ctx, json_output)
    client = _client(ctx)
    build = client.json("GET", f"/api/v1/builds/{build_id}")
    artifacts = client.json("GET", f"/api/v1/builds/{build_id}/artifacts")
    if json_output:
        _emit({**build, "artifacts": artifacts})
        return
    click.echo(f"build {build['id']} of {build['environment']}: {build['status']}"
               + (" (current)" if build["current"] else "") + (" (cancel requested)" if build["cancel_requested"]
                                                                 and build["status"] != "canceled" else ""))
    click.echo(f"platforms: {', '.join(build['platforms']) or '-'}; attempt {build['attempt']}; "
               f"worker: {build['worker'] or '-'}; packages: {build['package_count']}; log lines: {build['log_lines']}")
    for key, value in build["timestamps"].items():
        if value:
            click.echo(f"  {key.removesuffix('_at'):<10} {_when(value)}")
    if build.get("error"):
        error = build["error"]
        click.echo(f"error: [{error['code']}] {error.get('stage') or '-'}: {error['message']}"
                   + (f" (hint: {error['hint']})" if error.get("hint") else ""))
    if build.get("image_reference"):
        click.echo(f"image: {build['image_reference']}")
    if any(a.get("partial") for a in artifacts):
        click.echo("partial artifacts: the lock files solved before the build failed (envyard build download "
                   f"{build_id} NAME)")
    if artifacts:
        _table("artifact", "kind", "platform", "size", "digest", rows=[
            [a["name"], a["kind"] + (" (partial)" if a.get("partial") else ""), a["platform"] or "-",
             _size(a["size"]), a["digest"][:19]] for a in artifacts])


@build_group.command("logs")
@click.argument("build_id", metavar="ID", type=int)
@click.option("-f", "--follow", is_flag=True, help="Stream new lines until the build ends.")
@click.pass_context
def build_logs(ctx: click.Context, build_id: int, follow: bool) -> None:
    """Print a build's log."""
    client = _client(ctx)
    if follow:
        from envyard.api.cli_progress import BuildFollower

        BuildFollower(client, build_id, on_log=lambda lines: click.echo("\n".join(lines))).run()
        return
    click.echo(client.request("GET", f"/api/v1/builds/{build_id}/logs").text, nl=False)


@build_group.command("cancel")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_cancel(ctx: click.Context, build_id: int, json_output: bool) -> None:
    """Cancel a queued or running build."""
    _json_mode(ctx, json_output)
    build = _client(ctx).json("POST", f"/api/v1/builds/{build_id}/cancel")
    if json_output:
        _emit(build)
    elif build["status"] == "canceled":
        click.echo(f"build {build_id} canceled")
    else:
        click.echo(f"build {build_id}: cancel requested (its worker stops it within a heartbeat)")


@build_group.command("diff")
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_diff(ctx: click.Context, old: int, new: int, json_output: bool) -> None:
    """Packages added, removed and changed from build OLD to build NEW."""
    _json_mode(ctx, json_output)
    diff = _client(ctx).json("GET", f"/api/v1/builds/{old}/diff/{new}")
    if json_output:
        _emit(diff)
        return
    changes = [("+", c, c["new"]) for c in diff["added"]] + [("-", c, c["old"]) for c in diff["removed"]] \
        + [("~", c, f"{c['old']} -> {c['new']}") for c in diff["changed"]]
    if not changes:
        click.echo("no differences")
    for platform in sorted({c["platform"] for _, c, _ in changes}):
        click.echo(f"{platform}:")
        for mark, change, text in changes:
            if change["platform"] == platform:
                click.echo(f"  {mark} {change['name']} {text} ({change['manager']})")


@build_group.command("list")
@click.option("--env", "environment", metavar="NAMESPACE/NAME", help="Only this environment's builds.")
@click.option("--status", type=click.Choice(["queued", "solving", "installing", "imaging", "pushing", "completed",
                                             "failed", "canceled"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_list(ctx: click.Context, environment: str | None, status: str | None, limit: int,
               json_output: bool) -> None:
    """Builds, newest first."""
    _json_mode(ctx, json_output)
    params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
    if environment:
        params["environment"] = "/".join(_env(environment, "--env"))
    page = _client(ctx).json("GET", "/api/v1/builds", params=params)
    if json_output:
        _emit(page)
        return
    _table("build", "environment", "status", "platforms", "packages", "created", rows=[
        [b["id"], b["environment"], b["status"] + (" (current)" if b["current"] else ""),
         ",".join(b["platforms"]) or "-", b["package_count"], _when(b["timestamps"].get("created_at"))]
        for b in page["items"]])


@build_group.command("download")
@click.argument("build_id", metavar="ID", type=int)
@click.argument("name")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="File or directory [default: NAME's last part in the current directory].")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_download(ctx: click.Context, build_id: int, name: str, output: Path | None, json_output: bool) -> None:
    """Download artifact NAME of a build and check its sha256."""
    _json_mode(ctx, json_output)
    client = _client(ctx)
    artifacts = {a["name"]: a for a in client.json("GET", f"/api/v1/builds/{build_id}/artifacts")}
    if name not in artifacts:
        files = [n for n in artifacts if not n.startswith("blobs/")]  # named files first, then the image's blobs
        blobs = len(artifacts) - len(files)
        listed = ", ".join(files) + (f"{', and ' if files else ''}{blobs} image blobs (blobs/sha256/<hex>)"
                                     if blobs else "")
        raise NotFoundError(f"build {build_id} has no artifact '{name}'", field="NAME",
                            hint=f"its artifacts: {listed or 'none'}")
    from envyard.api.cli_progress import download_artifact

    basename = name.rsplit("/", 1)[-1]  # blobs/sha256/<hex> lands as <hex>, never outside the target
    target = (output / basename if output.is_dir() else output) if output else Path(basename)
    size = download_artifact(client, build_id, artifacts[name], target)
    result = {"path": str(target), "digest": artifacts[name]["digest"], "size": size}
    if json_output:
        _emit(result)
    else:
        click.echo(f"wrote {target} ({_size(size)}, sha256 verified)")


def register(cli: click.Group) -> None:
    cli.add_command(env_group)
    cli.add_command(build_group)
