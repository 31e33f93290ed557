"""``envyard lock``, ``envyard lock diff``, ``envyard why`` and ``envyard channel build``."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from api.cli import DefaultGroup
from builder.errors import SpecError, StaleLockError
from builder.progress import Stage


class RichReporter:
    """Shows the current stage on stderr with a spinner (silent when stderr is not a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.status: Any = None

    def stage_started(self, stage: Stage, detail: str = "") -> None:
        if self.console.is_terminal:
            self.status = self.console.status(f"[bold]{stage.value}[/] {detail}")
            self.status.start()

    def stage_finished(self, stage: Stage, detail: str = "", **fields: Any) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            self.console.print(f"[green]✓[/] {stage.value} {detail} {extra}".rstrip())


def _settings() -> Any:
    from builder.settings import Settings

    return Settings()


def _parse_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SpecError(
            f"--exclude-newer: '{value}' is not a date", hint="write an ISO date such as 2025-01-31"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_virtual(values: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for value in values:
        name, sep, version = value.partition("=")
        if not sep or not name.startswith("__"):
            raise SpecError(
                f"--virtual-package: '{value}' is not NAME=VERSION",
                hint="write for example --virtual-package __glibc=2.34 or --virtual-package '__archspec=1 x86_64'",
            )
        parsed[name] = version.replace("=", " ")
    return parsed


def _options(params: dict[str, Any]) -> Any:
    from builder.channels import ChannelOptions, S3Options
    from builder.lock import LockOptions

    settings = _settings()
    channels = ChannelOptions(
        channel_alias=params["channel_alias"] or settings.channel_alias,
        mirrors=settings.mirrors,
        s3=S3Options(settings.s3_endpoint_url, settings.s3_region, settings.s3_addressing_style),
    )
    return settings, LockOptions(
        platforms=tuple(params["platform"]),
        channels=channels,
        cuda=params["cuda"],
        virtual_packages=_parse_virtual(params["virtual_package"]),
        exclude_newer=_parse_date(params["exclude_newer"]),
        strategy=params["strategy"],
        channel_priority=params["channel_priority"],
        pip_index_url=params["pip_index_url"] or settings.pip_index_url,
        pip_find_links=tuple(params["pip_find_links"]),
        pip_no_index=params["pip_no_index"],
        pip_cache_dir=settings.pip_cache_dir,
        environ=dict(os.environ),
    )


@click.group(cls=DefaultGroup, default_command="create", name="lock")
def lock_group() -> None:
    """Solve a spec and write conda-lock.yml, pixi.lock and conda-<platform>.lock files.

    \b
    envyard lock SPEC [OPTIONS]      (options: envyard lock create --help)
    envyard lock diff OLD NEW
    """


@lock_group.command("create")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("-p", "--platform", multiple=True,
              help="Platform to lock (repeatable); default: the spec's, else linux-64.",
)
@click.option("--channel-alias", metavar="URL", help="Base URL for channel names (e.g. an internal mirror).")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("."), show_default=True)
@click.option("--check", is_flag=True, help="Exit 2 if the lock in OUTPUT is stale for SPEC (no solve).")
@click.option("--cuda", metavar="VERSION", help="Solve with the __cuda virtual package at VERSION.")
@click.option("--virtual-package", multiple=True, metavar="NAME=VERSION", help="Override a virtual package.")
@click.option("--exclude-newer", metavar="DATE", help="Ignore packages published after DATE.")
@click.option("--strategy", type=click.Choice(["highest", "lowest", "lowest-direct"]), default="highest")
@click.option("--channel-priority", type=click.Choice(["strict", "disabled"]), default="strict")
@click.option("--pip-index-url", metavar="URL", help="Index for the pip section when the spec names none.")
@click.option("--pip-find-links", multiple=True, metavar="PATH", help="Extra wheel folder for the pip section.")
@click.option("--pip-no-index", is_flag=True, help="Resolve pip requirements from --pip-find-links only.")
@click.option("--environment", metavar="NAME",
              help="pixi.lock input: the environment to re-export (default: default; 'all' for every one).")
@click.option("--json", "json_output", is_flag=True, help="Print a machine-readable summary.")
@click.pass_context
def lock_create(ctx: click.Context, spec: Path, out_dir: Path, check: bool, json_output: bool,
                environment: str | None, **params: Any) -> None:
    """Lock SPEC (environment.yml, requirements.txt, or an existing lock to re-export)."""
    from builder.pipeline import check_directory, lock_to_directory

    ctx.meta["json_output"] = json_output
    settings, options = _options(params)
    if check:
        stale = check_directory(spec, out_dir, options, environ=os.environ)
        if json_output:
            click.echo(json.dumps({"fresh": not stale, "stale_platforms": stale}))
        if stale:
            raise StaleLockError(
                f"the lock in {out_dir} is stale for {spec} on {', '.join(stale)}",
                file=spec,
                hint=f"run: envyard lock {spec} -o {out_dir}",
            )
        if not json_output:
            click.echo(f"lock in {out_dir} is up to date with {spec}")
        return
    result = lock_to_directory(
        spec,
        out_dir,
        options,
        cache_dir=settings.cache_dir,
        environ=os.environ,
        reporter=None if json_output else RichReporter(),
        environment=environment,
    )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    summary = {
        "spec": str(spec),
        "reexported": result.reexported,
        "platforms": {
            p: {"conda": len(pl.conda), "pip": len(pl.pip)} for p, pl in result.lock.platforms.items()
        },
        "files": {k: str(v) for k, v in result.files.items()},
        "warnings": list(result.warnings),
    }
    if json_output:
        click.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("platform", "conda", "pip", title=f"{'re-exported' if result.reexported else 'locked'} {spec}")
    for platform, counts in summary["platforms"].items():
        table.add_row(platform, str(counts["conda"]), str(counts["pip"]))
    console = Console()
    console.print(table)
    for path in result.files.values():
        console.print(f"wrote {path}")


@lock_group.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def lock_diff(ctx: click.Context, old: Path, new: Path, json_output: bool) -> None:
    """Show packages added, removed and changed between two lockfiles, per platform."""
    from builder.lockdiff import diff_locks
    from builder.lockfiles import read_lockfile

    ctx.meta["json_output"] = json_output
    diff = diff_locks(read_lockfile(old), read_lockfile(new))
    if json_output:
        click.echo(json.dumps(diff.to_json(), indent=2))
        return
    if diff.empty:
        click.echo("no differences")
        return
    for platform, pdiff in diff.platforms.items():
        if pdiff.empty:
            continue
        click.echo(f"{platform}:")
        for change in pdiff.added:
            click.echo(f"  + {change.name} {change.new} ({change.manager})")
        for change in pdiff.removed:
            click.echo(f"  - {change.name} {change.old} ({change.manager})")
        for change in pdiff.changed:
            version = change.new if change.old == change.new else f"{change.old} -> {change.new}"
            click.echo(f"  ~ {change.name} {version} ({change.manager})" + "".join(f"; {d}" for d in change.details))


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
    from builder.lockfiles import read_lockfile
    from builder.why import why_all

    ctx.meta["json_output"] = json_output
    lock = read_lockfile(lockfile, environment=environment)
    result = why_all(lock, package, platform, max_paths=max_paths if all_paths else 1)
    if json_output:
        click.echo(json.dumps({"package": package, "platform": result.platform, "path": list(result.paths[0]),
                               "paths": [list(p) for p in result.paths],
                               "truncated": result.truncated and all_paths}))
        return
    for path in result.paths:
        click.echo(" -> ".join(path))
    if result.truncated and all_paths:
        click.echo(f"(more paths not shown: the first {len(result.paths)} are listed; raise --max-paths)", err=True)


@click.group("channel")
def channel_group() -> None:
    """Local channels."""


@channel_group.command("build")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path))
def channel_build(recipes: tuple[Path, ...], out_dir: Path) -> None:
    """Assemble packages from recipe files (see specs/recipes) into an indexed channel at OUTPUT."""
    from builder.localchannel import build_channel

    built = build_channel(recipes, out_dir)
    click.echo(f"built {len(built)} packages into {out_dir}", file=sys.stdout)


def register(cli: click.Group) -> None:
    cli.add_command(lock_group)
    cli.add_command(why_command)
    cli.add_command(channel_group)
