"""``envyard pack``: a relocatable archive of a lock or of an installed environment."""

from __future__ import annotations

from pathlib import Path

import click

from envyard.builder.errors import SpecError
from envyard.cli.context import (
    builder_settings,
    install_options,
    lock_platform,
    source_date_epoch,
    terminate_as_interrupt,
)
from envyard.cli.output import emit, json_mode

__all__ = ["pack_command"]


@click.command("pack")
@click.argument("lockfile", type=click.Path(path_type=Path), required=False)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="ENV.tar.gz or ENV.tar.zst")
@click.option("-p", "--platform", help="Platform of the lock to pack (default: this machine's).")
@click.option("--prefix", "existing", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Pack this installed environment instead of installing LOCKFILE.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def pack_command(ctx: click.Context, lockfile: Path | None, output: Path, platform: str | None,
                 existing: Path | None, json_output: bool) -> None:
    """Write a relocatable archive (conda-pack layout; unpack, then run bin/conda-unpack)."""
    import tempfile

    from envyard.builder.install import install_lock
    from envyard.builder.lockfiles import read_lockfile
    from envyard.builder.pack import PACKED_PREFIX, compression_for, pack_prefix

    json_mode(ctx, json_output)
    compression_for(output)
    if (lockfile is None) == (existing is None):
        raise SpecError("give either a LOCKFILE or --prefix DIR", hint="envyard pack conda-lock.yml -o env.tar.gz")
    with terminate_as_interrupt():
        if existing is not None:
            result = pack_prefix(existing.absolute(), output, packed_prefix=str(existing.absolute()),
                                 mtime=source_date_epoch())
        else:
            assert lockfile is not None
            settings = builder_settings()
            lock = read_lockfile(lockfile)
            chosen = lock_platform(lock, platform)
            with tempfile.TemporaryDirectory(prefix="envyard-pack-") as tmp:
                install_lock(lock.platforms[chosen], Path(tmp) / "env",
                             install_options(settings, target_prefix=PACKED_PREFIX), None)
                result = pack_prefix(Path(tmp) / "env", output, packed_prefix=PACKED_PREFIX,
                                     mtime=source_date_epoch())
    summary = {"archive": str(result.archive), "files": result.files, "relocated_files": result.relocated_files}
    if json_output:
        emit(summary)
    else:
        click.echo(f"wrote {output} ({result.files} entries; run bin/conda-unpack after unpacking)")
