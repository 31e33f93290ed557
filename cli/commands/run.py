"""``envyard run``: verify a run manifest's inputs, run its command, record the outputs in a new manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from envyard.cli.context import builder_settings, install_options, terminate_as_interrupt
from envyard.cli.output import emit, json_mode

__all__ = ["run_command"]


def default_lock(manifest_path: Path, filename: str | None) -> Path | None:
    """The lock a manifest names, beside the manifest (``lock.filename`` is relative to the manifest's folder)."""
    if not filename:
        return None
    candidate = manifest_path.parent / filename
    return candidate if candidate.is_file() else None


@click.command("run")
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(path_type=Path))
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="The host directory the command works in (outputs are relative to it).")
@click.option("--runtime", type=click.Choice(["prefix", "runc", "bwrap"]), default="prefix", show_default=True)
@click.option("--lock", type=click.Path(path_type=Path), help="The lockfile (default: the one the manifest names).")
@click.option("--image-layout", type=click.Path(path_type=Path), help="runc/bwrap: an OCI layout with the image.")
@click.option("-p", "--platform", help="Platform (default: this machine's).")
@click.option("--outputs", "outputs", multiple=True, metavar="PATH", help="An output file or folder (repeatable).")
@click.option("--repin-lock", is_flag=True,
              help="Take --lock's bytes as the environment (DVC pipelines, where a relock re-runs the stage).")
@click.option("--push-outputs", is_flag=True, help="dvc add + dvc push the outputs in the DVC repository --workdir.")
@click.option("-o", "--result", type=click.Path(path_type=Path),
              help="Where the result manifest goes (default: MANIFEST's name + .result.json).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def run_command(ctx: click.Context, manifest_file: Path, workdir: Path, runtime: str, lock: Path | None,
                image_layout: Path | None, platform: str | None, outputs: tuple[str, ...], repin_lock: bool,
                push_outputs: bool, result: Path | None, json_output: bool) -> None:
    """Run MANIFEST: every hash is verified before the command starts; the outputs are hashed afterwards."""
    from envyard.builder.run import RunOptions, run_manifest
    from envyard.builder.run_manifest import load_manifest

    json_mode(ctx, json_output)
    manifest = load_manifest(manifest_file)
    lock = lock or default_lock(manifest_file, manifest.environment.lock.filename)
    settings = builder_settings()
    options = RunOptions(workdir=workdir, runtime=runtime, lock_path=lock,  # type: ignore[arg-type]
                         image_layout=image_layout, platform=platform, install=install_options(settings),
                         outputs=outputs, repin_lock=repin_lock,
                         stdout=sys.stderr if json_output else None)  # --json: stdout is the one document
    with terminate_as_interrupt():
        done = run_manifest(manifest, options)
    pushed = None
    if push_outputs:
        from envyard.builder.outputs import push_outputs as push

        pushed = push(workdir, outputs)
    target = result or manifest_file.with_name(manifest_file.name.removesuffix(".json") + ".result.json")
    target.write_bytes(done.manifest.canonical_bytes())
    if json_output:
        emit({"digest": done.manifest.digest, "parent": done.manifest.parent, "result": str(target),
              "verified": done.verified, "outputs": [o.model_dump() for o in done.manifest.outputs],
              "pushed": pushed})
        return
    click.echo(f"verified {len(done.verified)} input(s) before the command; it exited 0")
    for output in done.manifest.outputs:
        click.echo(f"  {output.path}  sha256:{output.sha256}  {output.size} bytes")
    click.echo(f"wrote {target} ({done.manifest.digest}, parent {done.manifest.parent})")
