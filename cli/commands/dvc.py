"""``envyard dvc stage``: a ``dvc.yaml`` stage that runs a manifest, with the environment's lock as a dependency.

The stage is written through DVC's own API (``Repo.stage.add``): ``cmd`` is ``envyard run MANIFEST --lock LOCK …``,
``deps`` are the lock and the manifest, ``outs`` the declared outputs. ``dvc repro`` therefore re-runs the stage
when the lock's bytes change (a relock) and not before. With the ``prefix`` runtime the stage runs with
``--repin-lock``: the relocked environment is installed and its lock's sha256 recorded in the result manifest.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from envyard.builder.data import quiet_dvc_logging
from envyard.builder.errors import DataError, UsageError
from envyard.cli.output import emit, json_mode

__all__ = ["dvc_group"]


@click.group("dvc")
def dvc_group() -> None:
    """DVC pipelines whose stages run envyard manifests."""


def _inside(path: Path, root: Path, option: str) -> str:
    try:
        return path.absolute().relative_to(root).as_posix()
    except ValueError:
        raise UsageError(f"{option} {path} is outside the DVC repository {root}", field=option.lstrip("-"),
                         hint="keep the manifest, the lock and the outputs inside the repository") from None


@dvc_group.command("stage")
@click.argument("name")
@click.option("--manifest", "manifest_file", required=True, type=click.Path(path_type=Path))
@click.option("--repo", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="The DVC repository (its dvc.yaml gets the stage).")
@click.option("--lock", type=click.Path(path_type=Path), help="The lockfile (default: the one the manifest names).")
@click.option("--outputs", "outputs", multiple=True, metavar="PATH", help="An output of the command (repeatable).")
@click.option("--runtime", type=click.Choice(["prefix", "runc", "bwrap"]), default="prefix", show_default=True)
@click.option("--image-layout", type=click.Path(path_type=Path), help="runc/bwrap: the OCI layout.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def stage_command(ctx: click.Context, name: str, manifest_file: Path, repo: Path, lock: Path | None,
                  outputs: tuple[str, ...], runtime: str, image_layout: Path | None, json_output: bool) -> None:
    """Write (or replace) stage NAME in REPO's dvc.yaml: cmd `envyard run MANIFEST`, deps the lock and manifest."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    from envyard.builder.run_manifest import load_manifest

    json_mode(ctx, json_output)
    quiet_dvc_logging()
    manifest = load_manifest(manifest_file)
    if lock is None and manifest.environment.lock.filename:
        lock = manifest_file.parent / manifest.environment.lock.filename
    if lock is None or not lock.is_file():
        raise UsageError("the stage needs the environment's lockfile", field="lock", hint="pass --lock FILE")
    if runtime != "prefix" and image_layout is None:
        raise UsageError(f"the {runtime} runtime needs --image-layout DIR", field="image_layout")
    try:
        with Repo(os.fspath(repo)) as dvc_repo:
            root = Path(dvc_repo.root_dir)
            manifest_rel, lock_rel = _inside(manifest_file, root, "--manifest"), _inside(lock, root, "--lock")
            outs = [_inside(root / output if not Path(output).is_absolute() else Path(output), root, "--outputs")
                    for output in outputs]
            cmd = ["envyard", "run", manifest_rel, "--lock", lock_rel, "--workdir", ".", "--runtime", runtime]
            if runtime == "prefix":
                cmd.append("--repin-lock")
            else:
                assert image_layout is not None
                cmd += ["--image-layout", _inside(image_layout, root, "--image-layout")]
            for out in outs:
                cmd += ["--outputs", out]
            stage = dvc_repo.stage.add(name=name, cmd=shlex.join(cmd), deps=[lock_rel, manifest_rel], outs=outs,
                                       force=True)
            dvc_yaml = Path(stage.path).relative_to(root).as_posix()
    except NotDvcRepoError:
        raise DataError(f"{repo} is not a DVC repository", file=repo, hint="run `dvc init` there first") from None
    except DvcException as exc:
        raise DataError(f"cannot write the stage: {exc}", file=repo, field=name) from None
    summary = {"stage": name, "dvc_yaml": dvc_yaml, "cmd": shlex.join(cmd), "deps": [lock_rel, manifest_rel],
               "outs": outs}
    if json_output:
        emit(summary)
    else:
        click.echo(f"stage {name} in {dvc_yaml}: {summary['cmd']}")
