"""``envyard image``: an OCI image from a lock without a Docker daemon; written, pushed and/or loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import ImageError, SpecError
from envyard.cli.context import builder_settings, install_options, source_date_epoch, terminate_as_interrupt
from envyard.cli.output import RichReporter, emit, json_mode

__all__ = ["image_command"]


def _parse_output(value: str | None) -> tuple[Path, str] | None:
    if value is None:
        return None
    if not value.startswith("oci:"):
        raise SpecError(f"--output {value!r}: only OCI layouts are written", field="output",
                        hint="write --output oci:DIR or oci:DIR:TAG")
    rest = value[4:]
    directory, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        directory, tag = rest, "latest"
    return Path(directory), tag


def _uid_gid(value: str) -> tuple[int, int]:
    uid, _, gid = value.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise SpecError(f"--user {value!r} is not UID:GID", field="user", hint="for example 1000:100") from None


def _registry_client(ref: Any, insecure: bool, username: str | None, password: str | None,
                     settings: Any) -> Any:
    from envyard.registry.client import RegistryClient

    return RegistryClient(ref.registry, insecure=insecure, username=username, password=password,
                          docker_config=settings.docker_config)


@click.command("image")
@click.argument("lockfile", type=click.Path(path_type=Path))
@click.option("-p", "--platform", "platforms", multiple=True, help="Image platform (repeatable; default linux-64).")
@click.option("--base", default="scratch", show_default=True, help="Base image reference, or scratch.")
@click.option("--env-prefix", help="Where the environment lives in the image (default /opt/env).")
@click.option("--output", metavar="oci:DIR[:TAG]", help="Write an OCI image layout.")
@click.option("--push", "push_ref", metavar="REF", help="Push to a registry (REGISTRY/REPO:TAG).")
@click.option("--load", is_flag=True, help="Load into the Docker/Podman daemon at DOCKER_HOST.")
@click.option("--tag", "load_tag", default="envyard-env:latest", show_default=True, help="Tag for --load.")
@click.option("--insecure", is_flag=True, help="Plain HTTP / unverified TLS for the registry.")
@click.option("--username", envvar="ENVYARD_REGISTRY_USERNAME", help="Registry user (else docker config).")
@click.option("--password", envvar="ENVYARD_REGISTRY_PASSWORD", help="Registry password or token.")
@click.option("--user", "user", default="0:0", show_default=True, help="UID:GID owning the files (Nebari: 1000:100).")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True)
@click.option("--max-layers", type=click.IntRange(2, 120), default=50, show_default=True)
@click.option("--sbom", type=click.Choice(["spdx", "cyclonedx", "none"]), default="spdx", show_default=True)
@click.option("--name", default=None, help="Image title (default: the lock's environment name).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def image_command(ctx: click.Context, lockfile: Path, platforms: tuple[str, ...], base: str, env_prefix: str | None,
                  output: str | None, push_ref: str | None, load: bool, load_tag: str, insecure: bool,
                  username: str | None, password: str | None, user: str, compression: str, max_layers: int,
                  sbom: str, name: str | None, json_output: bool) -> None:
    """Build an OCI image from LOCKFILE without a Docker daemon; write, push and/or load it."""
    from envyard.builder.image import ImageRequest, build_image
    from envyard.builder.lockfiles import read_lockfile
    from envyard.builder.oci.image import ImageOptions
    from envyard.builder.oci.layers import LayerBudget
    from envyard.builder.oci.store import BlobStore

    json_mode(ctx, json_output)
    settings = builder_settings()
    layout = _parse_output(output)
    if layout is None and push_ref is None and not load:
        raise SpecError("nothing to do with the image", hint="add --output oci:DIR, --push REF and/or --load")
    lock = read_lockfile(lockfile)
    uid, gid = _uid_gid(user)
    platforms = platforms or ("linux-64",)
    options = ImageOptions(env_prefix=env_prefix or settings.env_prefix, uid=uid, gid=gid,
                           source_date_epoch=source_date_epoch(), compression=compression,  # type: ignore[arg-type]
                           budget=LayerBudget(max_layers=max_layers))
    store = BlobStore(settings.oci_store_dir)
    reporter = None if json_output else RichReporter()
    with terminate_as_interrupt():
        bases = _pull_bases(base, platforms, store, insecure, username, password, settings)
        title = name or lock.name or lockfile.parent.name or "environment"
        request = ImageRequest(lock, platforms, options, install_options(settings), bases,
                               sbom=None if sbom == "none" else sbom, name=title)  # type: ignore[arg-type]
        result = build_image(request, store, reporter)
        summary: dict[str, Any] = {"digest": result.image.digest, "platforms": list(platforms),
                                   "layers": {p: len(b) for p, b in result.layers.items()}}
        if layout is not None:
            from envyard.builder.oci.layout import write_layout

            write_layout(result.image, store, layout[0], layout[1])
            summary["output"] = f"oci:{layout[0]}:{layout[1]}"
        if push_ref is not None:
            summary["push"] = _push(result.image, store, push_ref, base, insecure, username, password, settings)
        if load:
            summary["load"] = _load(result.image, store, platforms, load_tag)
    if json_output:
        emit(summary)
    else:
        click.echo(f"built {result.image.digest}")
        for key in ("output", "push", "load"):
            if key in summary:
                click.echo(f"{key}: {summary[key] if key != 'push' else summary[key]['reference']}")


def _pull_bases(base: str, platforms: tuple[str, ...], store: Any, insecure: bool, username: str | None,
                password: str | None, settings: Any) -> dict[str, Any]:
    if base == "scratch":
        return {}
    from envyard.builder.oci.image import BaseImage
    from envyard.builder.oci.model import OCI_PLATFORMS
    from envyard.registry.push import pull_image
    from envyard.registry.reference import parse_reference

    ref = parse_reference(base)
    client = _registry_client(ref, insecure, username, password, settings)
    bases = {}
    for platform in platforms:
        if platform not in OCI_PLATFORMS:
            raise ImageError(f"no OCI platform for {platform}", field="platform", hint="use linux-64 or linux-aarch64")
        manifest, config = pull_image(ref, client, store, OCI_PLATFORMS[platform])
        pinned = f"{ref.registry}/{ref.repository}@{manifest.descriptor.digest}"
        bases[platform] = BaseImage(pinned, manifest, config)
    return bases


def _push(image: Any, store: Any, push_ref: str, base: str, insecure: bool, username: str | None,
          password: str | None, settings: Any) -> dict[str, Any]:
    from envyard.registry.push import push_image
    from envyard.registry.reference import parse_reference

    ref = parse_reference(push_ref)
    mount_from = []
    if base != "scratch":
        base_ref = parse_reference(base)
        if base_ref.registry == ref.registry:
            mount_from.append(base_ref.repository)
    report = push_image(image, store, ref, _registry_client(ref, insecure, username, password, settings),
                        mount_from=mount_from)
    return {"reference": report.reference, "digest": report.digest, "uploaded_blobs": report.uploaded_blobs,
            "uploaded_bytes": report.uploaded_bytes, "existing_blobs": report.existing_blobs,
            "mounted_blobs": report.mounted_blobs}


def _load(image: Any, store: Any, platforms: tuple[str, ...], tag: str) -> list[str]:
    from envyard.builder.install import host_platform
    from envyard.registry.docker_load import load_into_daemon

    chosen = host_platform() if host_platform() in platforms else platforms[0]
    manifest = image.manifests[list(platforms).index(chosen)]
    loaded: list[str] = load_into_daemon(manifest, store, [tag], docker_host=os.environ.get("DOCKER_HOST"))
    return loaded
