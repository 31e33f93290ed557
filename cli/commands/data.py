"""``envyard data snapshot`` and ``envyard data fetch``: DVC data pinned to a commit, fetched and verified.

Credentials of S3 remotes come from the standard AWS variables (``AWS_ACCESS_KEY_ID`` ...) or the repository's
``.dvc/config.local``, read by DVC itself; envyard never records them.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import click

from envyard.builder.data import quiet_dvc_logging
from envyard.builder.errors import DataError, UsageError
from envyard.cli.context import api_client
from envyard.cli.output import emit, format_when, json_mode, table

__all__ = ["data_group"]


@click.group("data")
def data_group() -> None:
    """DVC data snapshots: pin, fetch and verify."""


@data_group.command("snapshot")
@click.argument("repo")
@click.option("--rev", required=True, help="Git revision: tag, branch or commit (recorded as its commit).")
@click.option("--path", "paths", multiple=True, required=True, help="A DVC-tracked path (repeatable).")
@click.option("--remote", help="DVC remote name (default: the repository's default remote).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the snapshot to FILE.")
@click.option("--namespace", help="Let the server (root option --api) resolve and store it in NAMESPACE.")
@click.option("--remote-secret", metavar="NAME", help="With --namespace: the namespace secret holding the remote's "
              "options (JSON: access_key_id, secret_access_key, endpointurl ...).")
@click.option("--json", "json_output", is_flag=True, help="Print the snapshot document.")
@click.pass_context
def snapshot_command(ctx: click.Context, repo: str, rev: str, paths: tuple[str, ...], remote: str | None,
                     output: Path | None, namespace: str | None, remote_secret: str | None,
                     json_output: bool) -> None:
    """Pin DVC-tracked PATHs of REPO (a URL or a local path) at REV to a commit and DVC hashes.

    With --namespace the server does it (REPO as the server reaches it) and stores the snapshot; its id is what
    `envyard manifest create --build ... --data ID:/mount` takes."""
    from envyard.builder.data import DataSnapshot, snapshot_data

    json_mode(ctx, json_output)
    quiet_dvc_logging()
    if namespace is not None:
        stored = api_client(ctx).json("POST", f"/api/v1/namespaces/{namespace}/data-snapshots", json={
            "repo": repo, "rev": rev, "paths": list(paths), "remote": remote, "remote_secret": remote_secret})
        if output is not None:
            output.write_bytes(DataSnapshot.model_validate(stored["snapshot"]).canonical_bytes())
        if json_output:
            emit(stored)
        else:
            click.echo(f"snapshot {stored['id']} of {namespace}: {repo} at {rev} = {stored['commit']}")
        return
    if remote_secret is not None:
        raise UsageError("--remote-secret needs --namespace (a secret lives on the server)", field="remote-secret",
                         hint="locally DVC reads the AWS variables or .dvc/config.local")
    snapshot = snapshot_data(repo, rev, paths, remote)
    if output is not None:
        output.write_bytes(snapshot.canonical_bytes())
    if json_output:
        emit(snapshot.model_dump(mode="json"))
        return
    click.echo(f"{repo} at {rev} = {snapshot.commit} ({snapshot.digest})")
    for entry in snapshot.paths:
        click.echo(f"  {entry.path}  {entry.hash_name}:{entry.hash}  {entry.nfiles} file(s)  {entry.size} bytes")
    if snapshot.remote:
        click.echo(f"remote {snapshot.remote}: {snapshot.remote_url}")
    if output is not None:
        click.echo(f"wrote {output}")


def _snapshots(path: Path, index: int | None) -> list[tuple[Any, str | None]]:
    """(snapshot, mount) pairs of a snapshot file or of a run manifest's data (all, or data[index])."""
    from envyard.builder.data import load_snapshot
    from envyard.builder.run_manifest import RunManifest, load_manifest

    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}", file=path,
                        hint="give a snapshot file or a run manifest") from None
    if isinstance(document, dict) and document.get("kind") == "RunManifest":
        manifest: RunManifest = load_manifest(path)
        if index is None:
            return [(mount.snapshot, mount.mount) for mount in manifest.data]
        if not 0 <= index < len(manifest.data):
            raise DataError(f"the manifest has {len(manifest.data)} data snapshot(s), no data[{index}]", file=path,
                            field="data", hint="count from 0")
        return [(manifest.data[index].snapshot, None)]
    return [(load_snapshot(path), None)]


@data_group.command("fetch")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="Where the data goes.")
@click.option("--index", type=int, help="Of a manifest: only data[INDEX], straight into DEST.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def fetch_command(ctx: click.Context, file: Path, dest: Path, index: int | None, json_output: bool) -> None:
    """Fetch the data of FILE (a snapshot or a run manifest) at its pinned commit and verify every file.

    A snapshot's paths land at DEST/<path>; a manifest's snapshots at DEST/<mount path>/<path> (with --index:
    DEST/<path>).
    """
    from envyard.builder.data import fetch_data, verify_data

    json_mode(ctx, json_output)
    quiet_dvc_logging()
    fetched = []
    for snapshot, mount in _snapshots(file, index):
        target = dest / PurePosixPath(mount).relative_to("/") if mount else dest
        fetch_data(snapshot, target)
        verify_data(snapshot, target)
        fetched.append({"commit": snapshot.commit, "dest": str(target), "mount": mount,
                        "paths": [{"path": p.path, "hash": p.hash, "files": p.nfiles} for p in snapshot.paths]})
    if json_output:
        emit({"fetched": fetched, "verified": True})
        return
    for item in fetched:
        click.echo(f"fetched and verified {len(item['paths'])} path(s) at {item['commit'][:12]} into {item['dest']}")


@data_group.command("list")
@click.option("--namespace", required=True, help="The namespace whose snapshots to list (root option --api).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, namespace: str, json_output: bool) -> None:
    """The data snapshots stored in NAMESPACE on the server."""
    json_mode(ctx, json_output)
    found: list[dict[str, Any]] = api_client(ctx).json("GET", f"/api/v1/namespaces/{namespace}/data-snapshots")
    if json_output:
        emit(found)
        return
    table("id", "repo", "rev", "commit", "paths", "created", rows=[
        [s["id"], s["repo"], s["rev"], s["commit"][:12], ", ".join(p["path"] for p in s["snapshot"]["paths"]),
         format_when(s["created_at"])] for s in found])
