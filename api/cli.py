"""The ``envyard`` command line: one entry point, errors rendered in one place.

Commands live in small modules (``api/cli_lock.py`` ...) and are attached here.
Every :class:`builder.errors.EnvyardError` becomes one line on stderr and the
error's exit code; nothing else reaches the user as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from builder.errors import EnvyardError


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


class EnvyardCLI(click.Group):
    """The root group: maps typed errors to one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EnvyardError as err:
            if ctx.meta.get("json_output"):
                click.echo(json.dumps({"error": err.to_problem()}, indent=2))
            click.echo(f"error: {err.one_line()}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug in envyard, not bad input: still one line unless debugging
            if os.environ.get("ENVYARD_DEBUG"):
                raise
            click.echo(
                f"error: internal error: {type(exc).__name__}: {exc} "
                "(hint: rerun with ENVYARD_DEBUG=1 for the traceback and report it)",
                err=True,
            )
            sys.exit(70)


@click.group(cls=EnvyardCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="envyard")
def cli() -> None:
    """envyard: solve, lock and build conda environments reproducibly."""


def _register() -> None:
    from api import cli_image, cli_lock

    cli_lock.register(cli)
    cli_image.register(cli)


def main() -> None:
    """Run the CLI and leave without interpreter finalization.

    py-rattler's native worker threads may still drop Python objects while the
    interpreter finalizes, which aborts the process (``PyGILState_Release ...
    finalizing``) after the work is done. The CLI therefore flushes its output
    and ends the process directly with the command's exit code.
    """
    _register()
    code = 0
    try:
        cli(prog_name="envyard", standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
