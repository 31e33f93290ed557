"""``envyard verify``: re-derive every digest a run manifest pins and report drift field by field."""

from __future__ import annotations

from pathlib import Path

import click

from envyard.builder.data import quiet_dvc_logging
from envyard.builder.errors import DriftError
from envyard.cli.context import builder_settings, install_options, source_date_epoch, terminate_as_interrupt
from envyard.cli.output import emit, error_document, json_mode

__all__ = ["verify_command"]


@click.command("verify")
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(path_type=Path))
@click.option("--lock", type=click.Path(path_type=Path), help="The lockfile (default: the one the manifest names).")
@click.option("--image-layout", type=click.Path(path_type=Path), help="An OCI layout holding the image.")
@click.option("-p", "--platform", help="Only this platform's image.")
@click.option("--rebuild", is_flag=True, help="Rebuild the image from the lock and compare the digest.")
@click.option("--no-fetch", is_flag=True, help="Compare DVC's hashes at the commit only; do not fetch the bytes.")
@click.option("--env-prefix", help="--rebuild: as `envyard image --env-prefix` (default: the manifest's).")
@click.option("--user", default="0:0", show_default=True, help="--rebuild: as `envyard image --user`.")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True)
@click.option("--max-layers", type=click.IntRange(2, 120), default=50, show_default=True)
@click.option("--name", help="--rebuild: as `envyard image --name`.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def verify_command(ctx: click.Context, manifest_file: Path, lock: Path | None, image_layout: Path | None,
                   platform: str | None, rebuild: bool, no_fetch: bool, env_prefix: str | None, user: str,
                   compression: str, max_layers: int, name: str | None, json_output: bool) -> None:
    """Check MANIFEST against what can be derived now: lock bytes, image digest, data at the commit, code commit.

    Exits 2 when anything drifted (each drift: field, expected, actual).
    """
    from envyard.builder.run_manifest import load_manifest
    from envyard.builder.verify import verify_manifest

    json_mode(ctx, json_output)
    quiet_dvc_logging()
    manifest = load_manifest(manifest_file)
    if lock is None and manifest.environment.lock.filename:
        candidate = manifest_file.parent / manifest.environment.lock.filename
        lock = candidate if candidate.is_file() else None
    rebuilt: dict[str, str] = {}
    with terminate_as_interrupt():
        if rebuild:
            rebuilt = _rebuild(manifest, lock, platform, env_prefix, user, compression, max_layers, name)
        drift = verify_manifest(manifest, lock_path=lock, image_layout=image_layout, platform=platform,
                                fetch=not no_fetch, rebuilt=rebuilt)
    document = {"digest": manifest.digest, "ok": not drift, "rebuilt": rebuilt,
                "checked": {"lock": str(lock) if lock else None, "image_layout": str(image_layout) if image_layout
                            else None, "data": len(manifest.data), "code": manifest.code is not None},
                "drift": [item.model_dump() for item in drift]}
    if drift:
        error_document(ctx, document)
        first = drift[0]
        raise DriftError(f"{len(drift)} field(s) drifted; first {first.field}: expected {first.expected}, "
                         f"now {first.actual}", field=first.field,
                         details={"drift": document["drift"]},
                         hint="see every drift with --json; make a new manifest if the change is intended")
    if json_output:
        emit(document)
    else:
        click.echo(f"{manifest_file}: verified ({manifest.digest})")


def _rebuild(manifest: object, lock: Path | None, platform: str | None, env_prefix: str | None, user: str,
             compression: str, max_layers: int, name: str | None) -> dict[str, str]:
    from envyard.builder.errors import UsageError
    from envyard.builder.oci.image import ImageOptions
    from envyard.builder.oci.layers import LayerBudget
    from envyard.builder.run_manifest import RunManifest
    from envyard.builder.verify import rebuild_image_digest

    assert isinstance(manifest, RunManifest)
    if lock is None:
        raise UsageError("--rebuild needs the lock", field="lock", hint="pass --lock FILE")
    uid, _, gid = user.partition(":")
    settings = builder_settings()
    options = ImageOptions(env_prefix=env_prefix or manifest.environment.prefix or settings.env_prefix,
                           uid=int(uid), gid=int(gid or uid), source_date_epoch=source_date_epoch(),
                           compression=compression, budget=LayerBudget(max_layers=max_layers))  # type: ignore[arg-type]
    platforms = [platform] if platform else sorted(manifest.environment.images) or ["linux-64"]
    return {each: rebuild_image_digest(lock, each, options, install_options(settings), settings.oci_store_dir, name)
            for each in platforms}
