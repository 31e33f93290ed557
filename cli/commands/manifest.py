"""``envyard manifest create``: a run manifest from a lock (and its image), data snapshots, code and a command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import ManifestError, UsageError
from envyard.cli.context import api_client
from envyard.cli.output import emit, format_when, json_mode, table

__all__ = ["manifest_group"]


@click.group("manifest")
def manifest_group() -> None:
    """Run manifests: environment + data + code + command, content-addressed."""


def _data_mount(value: str) -> Any:
    from envyard.builder.data import load_snapshot
    from envyard.builder.run_manifest import DataMount

    source, sep, mount = value.rpartition(":")
    if not sep or not source or not mount.startswith("/"):
        raise UsageError(f"--data {value!r} is not SNAPSHOT_FILE:/mount/path", field="data",
                         hint="for example --data snapshot.json:/work/data")
    try:
        return DataMount(snapshot=load_snapshot(source), mount=mount)
    except ValueError as exc:
        raise ManifestError(f"--data {value!r}: {exc}", field="data") from None


def _env(values: tuple[str, ...]) -> dict[str, str]:
    from envyard.builder.run_manifest import check_env_name

    env = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {value!r} is not NAME=VALUE", field="env", hint="for example --env SEED=42")
        env[check_env_name(name)] = text
    return env


def _environment(lock: Path | None, image_layout: Path | None, image_digest: str | None, platform: str,
                 relative_to: Path | None) -> Any:
    from envyard.builder.run_manifest import EnvironmentRef, lock_ref

    if lock is None:
        raise UsageError("a manifest needs the environment's lock", field="lock",
                         hint="pass --lock FILE (or --build NS/NAME with --api)")
    if image_layout is not None and image_digest is not None:
        raise UsageError("--image-layout and --image-digest exclude each other", field="image")
    images: dict[str, str] = {}
    prefix = None
    if image_layout is not None:
        from envyard.builder.oci.unpack import find_platform_manifest

        image = find_platform_manifest(image_layout, platform)
        images[platform] = image.digest
        labels = (image.config.get("config") or {}).get("Labels") or {}
        prefix = labels.get("dev.envyard.env-prefix")
    elif image_digest is not None:
        images[platform] = image_digest
    return EnvironmentRef(lock=lock_ref(lock, relative_to), images=images, prefix=prefix)


@manifest_group.command("create", context_settings={"ignore_unknown_options": False})
@click.option("--lock", type=click.Path(path_type=Path), help="The environment's lockfile (its sha256 is pinned).")
@click.option("--image-layout", type=click.Path(path_type=Path), help="An OCI layout of the environment's image.")
@click.option("--image-digest", help="The image manifest digest (sha256:...), when no layout is at hand.")
@click.option("--build", "build", metavar="NS/NAME[@BUILD]", help="An environment build of the server (--api).")
@click.option("-p", "--platform", default="linux-64", show_default=True, help="The image's platform.")
@click.option("--data", "data", multiple=True, metavar="SNAPSHOT_FILE:/MOUNT", help="A data snapshot and its mount.")
@click.option("--code", metavar="REPO@COMMIT", help="The code's git repository and commit (tag or branch resolved).")
@click.option("--code-subdirectory", help="The code's folder inside the repository.")
@click.option("--workdir", default="/work", show_default=True, help="The command's working directory.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="An environment variable (no secrets).")
@click.option("--cpu", help="CPU request (2, 500m).")
@click.option("--memory", help="Memory request (4Gi).")
@click.option("--gpus", type=click.IntRange(0), default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the manifest to FILE.")
@click.option("--json", "json_output", is_flag=True)
@click.argument("command", nargs=-1, required=True)
@click.pass_context
def create_command(ctx: click.Context, lock: Path | None, image_layout: Path | None, image_digest: str | None,
                   build: str | None, platform: str, data: tuple[str, ...], code: str | None,
                   code_subdirectory: str | None, workdir: str, env: tuple[str, ...], cpu: str | None,
                   memory: str | None, gpus: int, output: Path | None, json_output: bool,
                   command: tuple[str, ...]) -> None:
    """Make a run manifest: envyard manifest create --lock L --data S:/work/data -o run.json -- CMD ARG..."""
    from pydantic import ValidationError

    from envyard.builder.run_manifest import Resources, RunManifest

    json_mode(ctx, json_output)
    if build is not None:
        _create_on_server(ctx, build, data, code, code_subdirectory, workdir, env, cpu, memory, gpus, output,
                          json_output, command, local=(lock, image_layout, image_digest))
        return
    relative_to = output.parent if output is not None else None
    try:
        code_ref = None
        if code is not None:
            from envyard.builder.verify import resolve_code

            code_ref = resolve_code(code)
            if code_subdirectory:
                code_ref = code_ref.model_copy(update={"subdirectory": code_subdirectory})
        manifest = RunManifest(
            environment=_environment(lock, image_layout, image_digest, platform, relative_to),
            data=[_data_mount(value) for value in data], code=code_ref, command=list(command),
            workdir=workdir, env=_env(env), resources=Resources(cpu=cpu, memory=memory, gpus=gpus))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ManifestError(str(first["msg"]), field=".".join(str(p) for p in first["loc"]) or None,
                            hint="see envyard manifest create --help") from None
    if output is not None:
        output.write_bytes(manifest.canonical_bytes())
    if json_output:
        emit({"digest": manifest.digest, "file": str(output) if output else None,
              "manifest": manifest.model_dump(mode="json", by_alias=True)})
    elif output is not None:
        click.echo(f"wrote {output} ({manifest.digest})")
    else:
        click.echo(manifest.canonical_bytes().decode())


def _create_on_server(ctx: click.Context, build: str, data: tuple[str, ...], code: str | None,
                      code_subdirectory: str | None, workdir: str, env: tuple[str, ...], cpu: str | None,
                      memory: str | None, gpus: int, output: Path | None, json_output: bool,
                      command: tuple[str, ...], local: tuple[Any, ...]) -> None:
    """``--build NS/NAME[@BUILD]``: the server fills the environment from its build and stores the manifest."""
    if any(value is not None for value in local):
        raise UsageError("--build takes the environment from the server; --lock, --image-layout and --image-digest "
                         "are for local manifests", field="build")
    namespace, sep, _ = build.partition("/")
    if not sep or not namespace:
        raise UsageError(f"--build {build!r} is not NS/NAME[@BUILD]", field="build", hint="e.g. --build team/app@12")
    mounts = []
    for value in data:
        source, sep, mount = value.rpartition(":")
        if not sep or not source.isascii() or not source.isdigit() or not mount.startswith("/"):
            raise UsageError(f"--data {value!r} is not SNAPSHOT_ID:/mount/path", field="data",
                             hint="with --build, data are snapshots stored on the server: envyard data list "
                             f"--namespace {namespace}")
        mounts.append({"snapshot_id": int(source), "mount": mount})
    code_body = None
    if code is not None:
        from envyard.builder.verify import resolve_code

        resolved = resolve_code(code)
        code_body = {"repo": resolved.repository, "commit": resolved.commit,
                     **({"subdir": code_subdirectory} if code_subdirectory else {})}
    resources: dict[str, Any] = {"gpus": gpus, **({"cpu": cpu} if cpu else {}), **({"memory": memory} if memory
                                                                                  else {})}
    client = api_client(ctx)
    record = client.json("POST", f"/api/v1/namespaces/{namespace}/manifests", json={
        "build": build, "data": mounts, "code": code_body, "command": list(command), "workdir": workdir,
        "env": _env(env), "resources": resources})
    if output is not None:
        output.write_bytes(client.request("GET", f"/api/v1/namespaces/{namespace}/manifests/{record['digest']}")
                           .content)
    if json_output:
        emit({**record, "file": str(output) if output else None})
    else:
        click.echo(f"manifest {record['digest']} of build {record['build_id']} stored in {namespace}"
                   + (f"; wrote {output}" if output else ""))


@manifest_group.command("list")
@click.option("--namespace", required=True, help="The namespace on the server (root option --api).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, namespace: str, json_output: bool) -> None:
    """The run manifests stored in NAMESPACE."""
    json_mode(ctx, json_output)
    found: list[dict[str, Any]] = api_client(ctx).json("GET", f"/api/v1/namespaces/{namespace}/manifests")
    if json_output:
        emit(found)
        return
    table("digest", "build", "size", "created by", "created", rows=[
        [m["digest"], m["build_id"], m["size"], m["created_by"] or "-", format_when(m["created_at"])]
        for m in found])


@manifest_group.command("show")
@click.argument("digest")
@click.option("--namespace", required=True, help="The namespace on the server (root option --api).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the manifest's bytes to FILE.")
@click.pass_context
def show_command(ctx: click.Context, digest: str, namespace: str, output: Path | None) -> None:
    """The exact canonical bytes of manifest DIGEST (sha256:...) of NAMESPACE."""
    data = api_client(ctx).request("GET", f"/api/v1/namespaces/{namespace}/manifests/{digest}").content
    if output is not None:
        output.write_bytes(data)
        click.echo(f"wrote {output} ({digest})")
    else:
        click.echo(data.decode())
