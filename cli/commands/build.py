"""``envyard build ...``: builds on an envyard server: show, logs, cancel, diff, list, download, publish."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import NotFoundError, RegistryError
from envyard.cli.context import api_client, check_name, environment_name
from envyard.cli.output import emit, format_size, format_when, json_mode, table

__all__ = ["build_group"]

POLL_SECONDS = 0.5
FINISHED = {"pushed", "failed"}


@click.group("build")
def build_group() -> None:
    """Builds on an envyard server: show, logs, cancel, diff, list, download."""


@build_group.command("show")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--json", "json_output", is_flag=True, help="The build with an 'artifacts' list.")
@click.pass_context
def build_show(ctx: click.Context, build_id: int, json_output: bool) -> None:
    """A build: status, stage times, error and artifacts."""
    json_mode(ctx, json_output)
    client = api_client(ctx)
    build = client.json("GET", f"/api/v1/builds/{build_id}")
    artifacts = client.json("GET", f"/api/v1/builds/{build_id}/artifacts")
    if json_output:
        emit({**build, "artifacts": artifacts})
        return
    click.echo(f"build {build['id']} of {build['environment']}: {build['status']}"
               + (" (current)" if build["current"] else "") + (" (cancel requested)" if build["cancel_requested"]
                                                                 and build["status"] != "canceled" else ""))
    click.echo(f"platforms: {', '.join(build['platforms']) or '-'}; attempt {build['attempt']}; "
               f"worker: {build['worker'] or '-'}; packages: {build['package_count']}; log lines: {build['log_lines']}")
    for key, value in build["timestamps"].items():
        if value:
            click.echo(f"  {key.removesuffix('_at'):<10} {format_when(value)}")
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
        table("artifact", "kind", "platform", "size", "digest", rows=[
            [a["name"], a["kind"] + (" (partial)" if a.get("partial") else ""), a["platform"] or "-",
             format_size(a["size"]), a["digest"][:19]] for a in artifacts])


@build_group.command("logs")
@click.argument("build_id", metavar="ID", type=int)
@click.option("-f", "--follow", is_flag=True, help="Stream new lines until the build ends.")
@click.pass_context
def build_logs(ctx: click.Context, build_id: int, follow: bool) -> None:
    """Print a build's log."""
    client = api_client(ctx)
    if follow:
        from envyard.cli.follow import BuildFollower

        BuildFollower(client, build_id, on_log=lambda lines: click.echo("\n".join(lines))).run()
        return
    click.echo(client.request("GET", f"/api/v1/builds/{build_id}/logs").text, nl=False)


@build_group.command("cancel")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_cancel(ctx: click.Context, build_id: int, json_output: bool) -> None:
    """Cancel a queued or running build."""
    json_mode(ctx, json_output)
    build = api_client(ctx).json("POST", f"/api/v1/builds/{build_id}/cancel")
    if json_output:
        emit(build)
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
    json_mode(ctx, json_output)
    diff = api_client(ctx).json("GET", f"/api/v1/builds/{old}/diff/{new}")
    if json_output:
        emit(diff)
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
    json_mode(ctx, json_output)
    params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
    if environment:
        params["environment"] = "/".join(environment_name(environment, "--env"))
    page = api_client(ctx).json("GET", "/api/v1/builds", params=params)
    if json_output:
        emit(page)
        return
    table("build", "environment", "status", "platforms", "packages", "created", rows=[
        [b["id"], b["environment"], b["status"] + (" (current)" if b["current"] else ""),
         ",".join(b["platforms"]) or "-", b["package_count"], format_when(b["timestamps"].get("created_at"))]
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
    json_mode(ctx, json_output)
    client = api_client(ctx)
    artifacts = {a["name"]: a for a in client.json("GET", f"/api/v1/builds/{build_id}/artifacts")}
    if name not in artifacts:
        files = [n for n in artifacts if not n.startswith("blobs/")]  # named files first, then the image's blobs
        blobs = len(artifacts) - len(files)
        listed = ", ".join(files) + (f"{', and ' if files else ''}{blobs} image blobs (blobs/sha256/<hex>)"
                                     if blobs else "")
        raise NotFoundError(f"build {build_id} has no artifact '{name}'", field="NAME",
                            hint=f"its artifacts: {listed or 'none'}")
    from envyard.cli.follow import download_artifact

    basename = name.rsplit("/", 1)[-1]  # blobs/sha256/<hex> lands as <hex>, never outside the target
    target = (output / basename if output.is_dir() else output) if output else Path(basename)
    size = download_artifact(client, build_id, artifacts[name], target)
    result = {"path": str(target), "digest": artifacts[name]["digest"], "size": size}
    if json_output:
        emit(result)
    else:
        click.echo(f"wrote {target} ({format_size(size)}, sha256 verified)")


def _show(publications: list[dict[str, Any]]) -> None:
    if not publications:
        click.echo("no publications")
        return
    table("target", "status", "attempt", "blobs up/mounted/existing", "uploaded", "finished", "reference", rows=[
        [p["target"], p["status"], p["attempt"], f"{p['uploaded_blobs']}/{p['mounted_blobs']}/{p['existing_blobs']}",
         format_size(p["uploaded_bytes"]), format_when(p["finished_at"]), p["reference"] or "-"] for p in publications])
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
    json_mode(ctx, json_output)
    client = api_client(ctx)
    body = {"target": check_name(target, "--target")} if target else {}
    publications = client.json("POST", f"/api/v1/builds/{build_id}/publications", json=body)
    wanted = {p["id"] for p in publications}
    while wait and any(p["status"] not in FINISHED for p in publications):
        time.sleep(POLL_SECONDS)
        publications = [p for p in client.json("GET", f"/api/v1/builds/{build_id}/publications")
                        if p["id"] in wanted]
    if json_output:
        emit(publications)
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
    json_mode(ctx, json_output)
    publications = api_client(ctx).json("GET", f"/api/v1/builds/{build_id}/publications")
    if json_output:
        emit(publications)
    else:
        _show(publications)


def _pin(ctx: click.Context, build_id: int, method: str, json_output: bool) -> None:
    json_mode(ctx, json_output)
    build = api_client(ctx).json(method, f"/api/v1/builds/{build_id}/pin")
    if json_output:
        emit(build)
        return
    click.echo(f"build {build['id']} {'pinned: retention keeps it' if build['pinned'] else 'unpinned'}")


@build_group.command("pin")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_pin(ctx: click.Context, build_id: int, json_output: bool) -> None:
    """Keep build ID whatever its namespace's retention says."""
    _pin(ctx, build_id, "PUT", json_output)


@build_group.command("unpin")
@click.argument("build_id", metavar="ID", type=int)
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_unpin(ctx: click.Context, build_id: int, json_output: bool) -> None:
    """Let retention collect build ID again."""
    _pin(ctx, build_id, "DELETE", json_output)


@build_group.command("promote")
@click.argument("build_id", metavar="ID", type=int)
@click.argument("target", metavar="NAMESPACE[/NAME]")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def build_promote(ctx: click.Context, build_id: int, target: str, json_output: bool) -> None:
    """Promote build ID into a curated environment by reference (same image digest, nothing rebuilt)."""
    json_mode(ctx, json_output)
    namespace, _, name = target.partition("/")
    body = {"namespace": namespace, "name": name or None}
    build = api_client(ctx).json("POST", f"/api/v1/builds/{build_id}/promote", json=body)
    if json_output:
        emit(build)
        return
    click.echo(f"build {build_id} promoted to {build['environment']} as build {build['id']} "
               f"({build['image_digest'] or 'no image'})")
