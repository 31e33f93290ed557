"""``envyard run``: verify a run manifest's inputs, run its command, record the outputs in a new manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from envyard.builder.data import quiet_dvc_logging
from envyard.builder.errors import UsageError
from envyard.cli.context import api_client, builder_settings, install_options, terminate_as_interrupt
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
@click.option("--namespace", help="MANIFEST is a digest of a manifest stored in NAMESPACE on the server (root "
              "option --api): the manifest, its build's lock and (runc/bwrap) image by digest come from there, "
              "and the result manifest is stored there too.")
@click.option("--fetch-dir", type=click.Path(path_type=Path),
              help="With --namespace: where the manifest, lock and image layout go [default: .envyard-run/HEX].")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def run_command(ctx: click.Context, manifest_file: Path, workdir: Path, runtime: str, lock: Path | None,
                image_layout: Path | None, platform: str | None, outputs: tuple[str, ...], repin_lock: bool,
                push_outputs: bool, result: Path | None, namespace: str | None, fetch_dir: Path | None,
                json_output: bool) -> None:
    """Run MANIFEST (a file, or with --namespace a digest on the server): every hash is verified before the
    command starts; the outputs are hashed afterwards."""
    from envyard.builder.run import RunOptions, run_manifest
    from envyard.builder.run_manifest import load_manifest

    json_mode(ctx, json_output)
    quiet_dvc_logging()
    if namespace is not None:
        if lock is not None or image_layout is not None:
            raise UsageError("with --namespace the lock and the image come from the server", field="namespace",
                             hint="drop --lock and --image-layout, or run a manifest file without --namespace")
        manifest_file, lock, image_layout = _fetch_from_server(ctx, namespace, str(manifest_file), runtime,
                                                               platform, fetch_dir)
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
    if namespace is not None:
        import json

        api_client(ctx).json("POST", f"/api/v1/namespaces/{namespace}/manifests", json={
            "manifest": json.loads(done.manifest.canonical_bytes()), "digest": done.manifest.digest})
    if json_output:
        emit({"digest": done.manifest.digest, "parent": done.manifest.parent, "result": str(target),
              "verified": done.verified, "outputs": [o.model_dump() for o in done.manifest.outputs],
              "pushed": pushed})
        return
    click.echo(f"verified {len(done.verified)} input(s) before the command; it exited 0")
    for output in done.manifest.outputs:
        click.echo(f"  {output.path}  sha256:{output.sha256}  {output.size} bytes")
    click.echo(f"wrote {target} ({done.manifest.digest}, parent {done.manifest.parent})")


def _fetch_from_server(ctx: click.Context, namespace: str, digest: str, runtime: str, platform: str | None,
                       fetch_dir: Path | None) -> tuple[Path, Path, Path | None]:
    """The manifest ``digest`` of ``namespace``, its build's lock and (container runtimes) its image pulled by
    digest from the server's own /v2/ into an OCI layout: (manifest file, lock file, layout or None)."""
    import re
    from urllib.parse import urlsplit

    from envyard.builder.install import host_platform
    from envyard.builder.run_manifest import RunManifest
    from envyard.registry.client import RegistryClient
    from envyard.registry.layout import pull_to_layout
    from envyard.registry.reference import parse_reference

    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise UsageError(f"with --namespace, MANIFEST is a digest (sha256:<64 hex>), not {digest!r}",
                         field="MANIFEST", hint=f"list them: envyard manifest list --namespace {namespace}")
    client = api_client(ctx)
    data = client.request("GET", f"/api/v1/namespaces/{namespace}/manifests/{digest}").content
    manifest = RunManifest.parse(data, source=digest)
    folder = fetch_dir or Path(".envyard-run") / digest.removeprefix("sha256:")[:12]
    folder.mkdir(parents=True, exist_ok=True)
    manifest_file = folder / "manifest.json"
    manifest_file.write_bytes(data)
    environment = manifest.environment
    if environment.build_id is None or not environment.lock.filename:
        raise UsageError("the manifest names no build of the server (environment.build_id, lock.filename)",
                         field="environment", hint="run it as a file with --lock and --image-layout")
    lock = folder / Path(environment.lock.filename).name
    lock.write_bytes(client.request("GET", f"/api/v1/builds/{environment.build_id}/artifacts/"
                                    f"{environment.lock.filename}").content)
    layout = None
    if runtime != "prefix":
        if not environment.image_refs:
            raise UsageError("the manifest's build has no image", field="runtime", hint="run with --runtime prefix")
        ref = parse_reference(environment.image_refs[0])
        api = urlsplit(client.api_url)
        ref = parse_reference(f"{api.netloc}/{ref.repository}@{ref.digest}")  # the server as this client reaches it
        layout = folder / "layout"
        token = ctx.find_root().obj.resolve_token()
        with RegistryClient(api.netloc, username="envyard", password=token, plain_http=api.scheme == "http") as pull:
            pull_to_layout(ref, pull, layout, platform or host_platform())
    return manifest_file, lock, layout
