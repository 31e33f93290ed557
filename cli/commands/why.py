"""``envyard why``: the dependency path(s) that bring a package into a lock."""

from __future__ import annotations

from pathlib import Path

import click

from envyard.cli.output import emit, json_mode

__all__ = ["why_command"]


@click.command("why")
@click.argument("package")
@click.argument("lockfile", type=click.Path(path_type=Path))
@click.option("-p", "--platform", help="Platform to look in (default: the lock's first).")
@click.option("--all", "all_paths", is_flag=True, help="Show every dependency path, shortest first.")
@click.option("--max-paths", type=click.IntRange(min=1), default=50, show_default=True,
              help="With --all: stop after this many paths.")
@click.option("--environment", metavar="NAME", help="pixi.lock input: the environment to look in.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def why_command(ctx: click.Context, package: str, lockfile: Path, platform: str | None, all_paths: bool,
                max_paths: int, environment: str | None, json_output: bool) -> None:
    """Show why PACKAGE is in LOCKFILE: the dependency path(s) from a requested spec."""
    from envyard.builder.lockfiles import read_lockfile
    from envyard.builder.why import why_all

    json_mode(ctx, json_output)
    lock = read_lockfile(lockfile, environment=environment)
    result = why_all(lock, package, platform, max_paths=max_paths if all_paths else 1)
    if json_output:
        emit({"package": package, "platform": result.platform, "path": list(result.paths[0]),
              "paths": [list(p) for p in result.paths], "truncated": result.truncated and all_paths}, indent=None)
        return
    for path in result.paths:
        click.echo(" -> ".join(path))
    if result.truncated and all_paths:
        click.echo(f"(more paths not shown: the first {len(result.paths)} are listed; raise --max-paths)", err=True)
