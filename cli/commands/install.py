"""``envyard install``: a conda environment from a lock, on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from envyard.cli.context import builder_settings, install_options, lock_platform, terminate_as_interrupt
from envyard.cli.output import RichReporter, emit, json_mode

__all__ = ["install_command"]


@click.command("install")
@click.argument("lockfile", type=click.Path(path_type=Path))
@click.option("--prefix", required=True, type=click.Path(path_type=Path), help="Where to create the environment.")
@click.option("-p", "--platform", help="Platform of the lock to install (default: this machine's).")
@click.option("--target-prefix", metavar="PATH", help="Relocate for PATH instead of --prefix (e.g. /opt/env).")
@click.option("--force", is_flag=True, help="Replace an existing prefix (atomically).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def install_command(ctx: click.Context, lockfile: Path, prefix: Path, platform: str | None,
                    target_prefix: str | None, force: bool, json_output: bool) -> None:
    """Create a conda environment at PREFIX from LOCKFILE (conda-lock.yml, pixi.lock or @EXPLICIT)."""
    from envyard.builder.install import install_lock
    from envyard.builder.lockfiles import read_lockfile

    json_mode(ctx, json_output)
    settings = builder_settings()
    lock = read_lockfile(lockfile)
    chosen = lock_platform(lock, platform)
    options = install_options(settings, target_prefix=target_prefix, replace=force)
    with terminate_as_interrupt():
        result = install_lock(lock.platforms[chosen], prefix, options, None if json_output else RichReporter())
    summary = {"prefix": str(result.prefix), "target_prefix": result.target_prefix, "platform": chosen,
               "conda": result.conda_packages, "pip": result.pip_packages,
               "fetched": result.fetched, "from_cache": result.from_cache}
    if json_output:
        emit(summary)
    else:
        click.echo(f"installed {result.conda_packages} conda and {result.pip_packages} pip packages into {prefix}")
