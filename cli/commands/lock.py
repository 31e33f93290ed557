"""``envyard lock`` and ``envyard lock diff``."""

from __future__ import annotations

import os
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import MissingLockError, SpecError, StaleLockError
from envyard.cli.context import builder_settings
from envyard.cli.output import RichReporter, emit, error_document, json_mode, rich_console

__all__ = ["DefaultGroup", "fix_command", "lock_group"]


class DefaultGroup(click.Group):
    """A group that runs ``default_command`` when the first argument names no subcommand.

    ``envyard lock SPEC`` and ``envyard lock diff OLD NEW`` then share one name.
    """

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The default command's usage and options (``envyard lock --help`` shows what ``envyard lock SPEC``
        takes), then the group's text and its other commands."""
        default = self.commands.get(self.default_command)
        if default is None:
            return super().format_help(ctx, formatter)
        as_default = click.Context(default, info_name=ctx.info_name, parent=ctx.parent)
        default.format_usage(as_default, formatter)
        self.format_help_text(ctx, formatter)
        default.format_options(as_default, formatter)
        self.format_commands(ctx, formatter)
        self.format_epilog(ctx, formatter)


NONE = "none"  # ``--cuda none`` / ``--exclude-newer none``: unset an option a previous lock recorded
DEFAULT_ALIAS = "https://conda.anaconda.org/"
#: command-line parameter -> the lock option it sets (see builder.lock.INHERITABLE)
INHERITED_PARAMS = {
    "platform": "platforms", "channel_alias": "channel_alias", "cuda": "cuda", "virtual_package": "virtual_packages",
    "exclude_newer": "exclude_newer", "strategy": "strategy", "channel_priority": "channel_priority",
    "pip_index_url": "pip_index_url", "pip_find_links": "pip_find_links", "pip_no_index": "pip_no_index",
}


def _parse_date(value: str | None) -> datetime | None:
    if value is None or value == NONE:
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


def _inherited(ctx: click.Context, settings: Any) -> frozenset[str]:
    """The lock options neither the command line nor a setting gives: a relock takes them from the lock."""
    given = {name for name in INHERITED_PARAMS
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}
    inherit = {option for param, option in INHERITED_PARAMS.items() if param not in given} | {"mirrors"}
    return frozenset(inherit - (settings.model_fields_set & {"channel_alias", "mirrors", "pip_index_url"}))


def _options(params: dict[str, Any], ctx: click.Context | None = None) -> Any:
    from envyard.builder.channels import ChannelOptions, S3Options
    from envyard.builder.lock import LockOptions

    settings = builder_settings()
    channels = ChannelOptions(
        channel_alias=params["channel_alias"] or settings.channel_alias,
        mirrors=settings.mirrors,
        s3=S3Options(settings.s3_endpoint_url, settings.s3_region, settings.s3_addressing_style),
    )
    return settings, LockOptions(
        platforms=tuple(params["platform"]),
        channels=channels,
        cuda=None if params["cuda"] == NONE else params["cuda"],
        virtual_packages=_parse_virtual(params["virtual_package"]),
        exclude_newer=_parse_date(params["exclude_newer"]),
        strategy=params["strategy"],
        channel_priority=params["channel_priority"],
        pip_index_url=params["pip_index_url"] or settings.pip_index_url,
        pip_find_links=tuple(params["pip_find_links"]),
        pip_no_index=params["pip_no_index"],
        pip_cache_dir=settings.pip_cache_dir,
        environ=dict(os.environ),
        inherit=_inherited(ctx, settings) if ctx is not None else frozenset(),
        update=tuple(params.get("update", ())),
        update_all=params.get("update_all", False),
    )


def fix_command(spec: Path, out_dir: Path, options: Any, recorded: Any = None) -> str:
    """The ``envyard lock`` command that makes the lock ``options`` describe (credentials never printed).

    It names every option that is not the default or that differs from what the lock in ``out_dir``
    records (``recorded``, which a relock would otherwise reuse): run verbatim, it reproduces the lock.
    """
    from envyard.builder.lock import provenance_of
    from envyard.builder.model import LockProvenance

    made = provenance_of(options)
    before = recorded or LockProvenance()
    args = ["envyard", "lock", str(spec), "-o", str(out_dir)]
    for platform in made.platforms:
        args += ["-p", platform]
    if made.channel_alias and made.channel_alias != DEFAULT_ALIAS or (
            before.channel_alias and made.channel_alias and made.channel_alias != before.channel_alias):
        args += ["--channel-alias", made.channel_alias]
    if made.cuda or before.cuda:
        args += ["--cuda", made.cuda or NONE]
    for name, version in made.virtual_packages.items():
        args += ["--virtual-package", f"{name}={version.replace(' ', '=')}"]
    if made.exclude_newer or before.exclude_newer:
        args += ["--exclude-newer", made.exclude_newer or NONE]
    if made.strategy != "highest" or before.strategy not in (None, made.strategy):
        args += ["--strategy", str(made.strategy)]
    if made.channel_priority != "strict" or before.channel_priority not in (None, made.channel_priority):
        args += ["--channel-priority", str(made.channel_priority)]
    if made.pip_index_url:
        args += ["--pip-index-url", made.pip_index_url]
    for link in made.pip_find_links:
        args += ["--pip-find-links", link]
    if made.pip_no_index:
        args.append("--pip-no-index")
    return shlex.join(args)


def _check(ctx: click.Context, spec: Path, out_dir: Path, options: Any, json_output: bool) -> None:
    """``--check``: exit 0 when fresh, 2 (with the command that fixes it) when stale or missing."""
    from envyard.builder.pipeline import check_directory

    found = check_directory(spec, out_dir, options, environ=os.environ)
    check = found.check
    fix = fix_command(spec, out_dir, found.options, found.recorded)
    document = {
        "spec": str(spec), "output": str(out_dir), "status": check.status, "fresh": check.status == "fresh",
        "stale_platforms": list(check.stale), "missing_platforms": list(check.missing),
        "extra_platforms": list(check.extra), "fix": fix,
    }
    if check.status == "fresh":
        if json_output:
            emit(document)
        else:
            click.echo(f"lock in {out_dir} is up to date with {spec}")
        return
    error_document(ctx, document)  # the root prints it once, with the error inside
    if check.status == "missing":
        raise MissingLockError(
            f"no lock in {out_dir} for {spec} (conda-lock.yml is missing)", file=spec, hint=f"run: {fix}"
        )
    reasons = [f"{p} ({found.details.get(p, 'inputs changed')})" for p in check.stale]
    reasons += [f"{p} (not locked)" for p in check.missing]
    reasons += [f"{p} ({found.details.get(p, 'no longer requested')})" for p in check.extra]
    raise StaleLockError(
        f"the lock in {out_dir} is stale for {spec}: {', '.join(reasons)}", file=spec, hint=f"run: {fix}"
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
@click.option("--update", multiple=True, metavar="PKG",
              help="Re-solve PKG freely (repeatable); other packages of the existing lock stay where they fit.")
@click.option("--update-all", is_flag=True, help="Re-solve every package (ignore the versions of the existing lock).")
@click.option("--environment", metavar="NAME",
              help="pixi.lock input: the environment to re-export (default: default; 'all' for every one).")
@click.option("--json", "json_output", is_flag=True, help="Print one machine-readable JSON document.")
@click.pass_context
def lock_create(ctx: click.Context, spec: Path, out_dir: Path, check: bool, json_output: bool,
                environment: str | None, **params: Any) -> None:
    """Lock SPEC (environment.yml, requirements.txt, or an existing lock to re-export).

    A relock into a directory that holds a lock reuses the options that lock was made with
    (platforms given with -p, --channel-alias, --cuda, --virtual-package, --exclude-newer, --strategy,
    --channel-priority, pip options) unless given again (--cuda none / --exclude-newer none unset them),
    and keeps every locked version that still fits the spec (--update PKG, --update-all free them).
    """
    from envyard.builder.errors import UsageError
    from envyard.builder.pipeline import lock_to_directory

    json_mode(ctx, json_output)
    settings, options = _options(params, ctx)
    if check:
        if options.update or options.update_all:
            raise UsageError("--check does not solve: --update and --update-all do not apply",
                             hint="drop --update/--update-all, or drop --check to relock")
        _check(ctx, spec, out_dir, options, json_output)
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
        "made_with": result.lock.provenance.to_metadata() if result.lock.provenance else None,
        "removed": [str(p) for p in result.removed],
        "warnings": list(result.warnings),
    }
    if json_output:
        emit(summary)
        return
    from rich.table import Table

    table = Table("platform", "conda", "pip", title=f"{'re-exported' if result.reexported else 'locked'} {spec}")
    for platform, counts in summary["platforms"].items():
        table.add_row(platform, str(counts["conda"]), str(counts["pip"]))
    console = rich_console()
    console.print(table)
    for path in result.files.values():
        console.print(f"wrote {path}")
    for path in result.removed:
        console.print(f"removed {path} (platform no longer locked)")


@lock_group.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--json", "json_output", is_flag=True)
@click.option("--exit-code", is_flag=True, help="Exit 1 when the locks differ, 0 when they do not (as git diff).")
@click.pass_context
def lock_diff(ctx: click.Context, old: Path, new: Path, json_output: bool, exit_code: bool) -> None:
    """Show packages added, removed and changed between two lockfiles, per platform."""
    from envyard.builder.lockdiff import diff_locks
    from envyard.builder.lockfiles import read_lockfile

    json_mode(ctx, json_output)
    diff = diff_locks(read_lockfile(old), read_lockfile(new))
    _print_diff(diff, json_output)
    if exit_code and not diff.empty:
        ctx.exit(1)


def _print_diff(diff: Any, json_output: bool) -> None:
    if json_output:
        emit(diff.to_json())
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
