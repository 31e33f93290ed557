"""``envyard ci``: relock (and optionally build and push) exactly the environments whose spec changed; report it.

The logic is :mod:`envyard.builder.ci` (discover, plan, run, render); this module reads the options, builds images
and pushes them with :mod:`envyard.registry`, or (``--api URL``) has the server's workers build them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import CiFailedError, SpecError, StaleLockError, UsageError
from envyard.cli.context import api_client, builder_settings, install_options, source_date_epoch
from envyard.cli.output import emit, error_document, json_mode

__all__ = ["ci_command"]

def _lock_options(settings: Any, channel_alias: str | None) -> Any:
    from envyard.builder.channels import ChannelOptions, S3Options
    from envyard.builder.lock import INHERITABLE, LockOptions

    channels = ChannelOptions(channel_alias=channel_alias or settings.channel_alias, mirrors=settings.mirrors,
                              s3=S3Options(settings.s3_endpoint_url, settings.s3_region, settings.s3_addressing_style))
    given = {"channel_alias"} if channel_alias else set()
    given |= settings.model_fields_set & {"channel_alias", "mirrors", "pip_index_url"}
    return LockOptions(channels=channels, pip_index_url=settings.pip_index_url, pip_cache_dir=settings.pip_cache_dir,
                       environ=dict(os.environ), inherit=frozenset(INHERITABLE - given))


def _image_builder(settings: Any) -> Any:
    """(target, lock) -> (image, blob store): the image of every Linux platform of the lock."""
    from envyard.builder.image import ImageRequest, build_image
    from envyard.builder.oci.image import ImageOptions
    from envyard.builder.oci.model import OCI_PLATFORMS
    from envyard.builder.oci.store import BlobStore

    store = BlobStore(settings.oci_store_dir)

    def build(target: Any, lock: Any) -> tuple[Any, Any]:
        platforms = [p for p in lock.platform_names if p in OCI_PLATFORMS]
        if not platforms:
            raise SpecError(f"{target.name}: the lock has no Linux platform to build an image for",
                            file=target.spec, hint="lock linux-64 (platforms = [\"linux-64\"] in envyard.toml)")
        options = ImageOptions(env_prefix=settings.env_prefix, source_date_epoch=source_date_epoch())
        request = ImageRequest(lock, platforms, options, install_options(settings), name=target.name)
        return build_image(request, store).image, store

    return build


def _reference(template: str, target: Any) -> str:
    from envyard.builder.pipeline import CONDA_LOCK_FILE

    lock_text = (target.lock_dir / CONDA_LOCK_FILE).read_bytes()
    import hashlib

    try:
        return template.format(name=target.name, hash=hashlib.sha256(lock_text).hexdigest()[:12])
    except (KeyError, IndexError, ValueError) as exc:
        raise SpecError(f"push template '{template}': {exc}", field="push",
                        hint="use {name} (the environment) and {hash} (of its lock), e.g. "
                             "registry.example.org/envs/{name}:{hash}") from None


def _publisher(push: str | None, insecure: bool, settings: Any) -> Any:
    def publish(target: Any, image: Any, store: Any) -> str | None:
        template = target.push or push
        if not template:
            return None
        from envyard.registry.client import RegistryClient
        from envyard.registry.push import push_image
        from envyard.registry.reference import parse_reference

        ref = parse_reference(_reference(template, target))
        client = RegistryClient(ref.registry, insecure=insecure, username=os.environ.get("ENVYARD_REGISTRY_USERNAME"),
                                password=os.environ.get("ENVYARD_REGISTRY_PASSWORD"),
                                docker_config=settings.docker_config)
        return str(push_image(image, store, ref, client).reference)

    return publish


def _remote(ctx: click.Context, planned: list[Any], build: bool) -> list[Any]:
    """``--api``: each stale environment is built by the server's workers; the CLI follows the builds, takes their
    lock files into the lock directories and reports the image digests."""
    from envyard.builder.ci import previous_lock
    from envyard.builder.errors import EnvyardError
    from envyard.builder.lockdiff import diff_locks
    from envyard.builder.lockfiles import read_lockfile, write_lock_files
    from envyard.builder.model import EnvironmentLock
    from envyard.builder.pipeline import CONDA_LOCK_FILE, remove_leftover_platform_files
    from envyard.cli.follow import BuildFollower, download_artifact

    client = api_client(ctx)
    submitted: dict[int, dict[str, Any]] = {}
    results = list(planned)
    for index, result in enumerate(planned):
        if result.status == "fresh":
            continue
        target = result.target
        namespace, _, name = (target.environment or f"ci/{target.name}").partition("/")
        body = {"namespace": namespace, "name": name, "spec": target.spec.read_text(encoding="utf-8"),
                "filename": target.spec.name, "platforms": list(target.platforms),
                "options": {"image": build, "archive": False, "sbom": None}}
        try:
            submitted[index] = client.json("POST", "/api/v1/environments", json=body)
        except EnvyardError as err:
            results[index] = dataclasses.replace(result, status="failed", error=err.one_line())
    for index, build_view in submitted.items():
        result = results[index]
        final = BuildFollower(client, build_view["id"]).run()
        if final["status"] != "completed":
            error = (final.get("error") or {}).get("message") or final["status"]
            results[index] = dataclasses.replace(result, status="failed", build_id=final["id"], solves=1,
                                                 error=f"build {final['id']} {final['status']}: {error}")
            continue
        before = previous_lock(result.target.lock_dir)
        lock_dir = result.target.lock_dir
        lock_dir.mkdir(parents=True, exist_ok=True)
        artifact = next(a for a in client.json("GET", f"/api/v1/builds/{final['id']}/artifacts")
                        if a["kind"] == "conda-lock")
        with tempfile.TemporaryDirectory(prefix="envyard-ci-") as tmp:
            download_artifact(client, final["id"], artifact, Path(tmp) / CONDA_LOCK_FILE)
            after = read_lockfile(Path(tmp) / CONDA_LOCK_FILE)
        # every lock format, written here as `envyard lock` writes them (the build's own names differ)
        write_lock_files(after, lock_dir)
        remove_leftover_platform_files(lock_dir, after, before)
        results[index] = dataclasses.replace(
            result, status="rebuilt" if build else "relocked", solves=1, build_id=final["id"],
            diff=diff_locks(before or EnvironmentLock({}), after),
            image_digest=final.get("image_digest"), image_reference=final.get("image_reference"))
    return results


@click.command("ci")
@click.argument("paths", nargs=-1)
@click.option("--config", "config", type=click.Path(path_type=Path),
              help="envyard.toml listing the specs, their platforms and lock directories (default: ./envyard.toml "
                   "when no PATHS are given).")
@click.option("--check", is_flag=True, help="Only check (no solve): exit 2 naming every stale lock.")
@click.option("--build", is_flag=True, help="Build the image of every environment whose lock changed.")
@click.option("--push", metavar="REF_TEMPLATE",
              help="Push those images, e.g. registry.example.org/envs/{name}:{hash} (implies --build).")
@click.option("--insecure", is_flag=True, help="Plain HTTP / unverified TLS for the registry.")
@click.option("--api", "api_url", metavar="URL", help="Build on this envyard server's workers instead of here.")
@click.option("--lock-dir", metavar="DIR", help="For PATHS: lock directory relative to each spec (default: its "
                                                "directory).")
@click.option("--channel-alias", metavar="URL", help="Base URL for channel names (else the locks' own).")
@click.option("-j", "--jobs", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Relocks at once.")
@click.option("--markdown", "markdown", type=click.Path(path_type=Path), metavar="FILE",
              help="Also write the report as a Markdown table (a pull-request comment) to FILE ('-': stdout).")
@click.option("--json", "json_output", is_flag=True, help="Print one machine-readable JSON document.")
@click.pass_context
def ci_command(ctx: click.Context, paths: tuple[str, ...], config: Path | None, check: bool, build: bool,
               push: str | None, insecure: bool, api_url: str | None, lock_dir: str | None,
               channel_alias: str | None, jobs: int, markdown: Path | None, json_output: bool) -> None:
    """Relock exactly the environments whose spec changed (and build and push their images); report what changed.

    Exit 0 when every lock is fresh or was remade, 1 when a solve or build failed, 2 under --check when a lock is
    stale (the report names it).
    """
    from envyard.builder import ci

    json_mode(ctx, json_output)
    if paths and config:
        raise UsageError("give spec PATHS or --config, not both", hint="list the specs in envyard.toml, or drop it")
    if check and (build or push):
        raise UsageError("--check neither solves nor builds", hint="drop --build/--push, or drop --check")
    settings = builder_settings()
    ci_settings: dict[str, Any] = {}
    if paths:
        targets = ci.discover(paths, Path.cwd(), lock_dir)
    else:
        config = config or Path(ci.CONFIG_FILE)
        targets, ci_settings = ci.read_config(config)
    push = push or (ci_settings.get("push") if build else None)
    build = build or bool(push)
    options = ci.CiOptions(lock=_lock_options(settings, channel_alias), cache_dir=settings.cache_dir,
                           environ=dict(os.environ), jobs=jobs, build=build,
                           build_image=_image_builder(settings) if build else None,
                           publish=_publisher(push, insecure, settings) if build else None)
    if api_url is not None and not check:
        root = ctx.find_root()
        root.obj = dataclasses.replace(root.obj, api_url=api_url.rstrip("/"))
        report = ci.CiReport(_remote(ctx, ci.plan(targets, options.lock, options.environ), build))
    else:
        report = ci.run(targets, options, check=check)
    text = ci.render_markdown(report)
    if markdown is not None:
        if str(markdown) == "-":
            click.echo(text, nl=False)
        else:
            markdown.write_text(text, encoding="utf-8")
    document = report.to_json()
    if not json_output and str(markdown) != "-":
        for result in report.results:
            extra = result.reason if result.status in ("stale", "missing") else result.error or ""
            changes = ci.change_lines(result.diff)
            click.echo(f"{result.target.name}: {result.status}" + (f" ({extra})" if extra else ""))
            for line in changes:
                click.echo(f"  {line}")
            if result.image_digest:
                click.echo(f"  image {result.image_digest}" + (f" pushed as {result.image_reference}"
                                                                if result.image_reference else ""))
        click.echo(text.rstrip().splitlines()[-1])
    code = report.exit_code
    if code == 0:
        if json_output:
            emit(document)
        return
    error_document(ctx, document)
    if code == 2:
        stale = report.stale
        names = ", ".join(f"{r.target.name} ({r.target.spec})" for r in stale)
        raise StaleLockError(f"{len(stale)} stale lock(s): {names}",
                             hint="run envyard ci " + " ".join(str(r.target.spec) for r in stale)
                             + " and commit the locks")
    failed = [r for r in report.results if r.status == "failed"]
    raise CiFailedError(f"{len(failed)} environment(s) failed: "
                        + "; ".join(f"{r.target.name}: {r.error}" for r in failed),
                        hint="see the report; fix the spec (or the channel) and run envyard ci again")
